"""Server-side apply of manifests (any kind, CRDs included) and waiting for CRDs to be Established.

Server-side apply, because client-side apply stores the whole object in an annotation capped at 256 KiB,
and KServe's InferenceService CRD is ~2 MB of YAML.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from .wait import wait_for

Manifest = dict[str, Any]
# libyaml parses KServe's 2 MB CRD ~6x faster than the pure-Python loader.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def request(
    api: ApiClient,
    method: str,
    path: str,
    *,
    query: Sequence[tuple[str, str]] = (),
    body: Any = None,
    content_type: str = "application/json",
    timeout: float | None = None,
) -> Any:
    """A raw API call returning the decoded JSON; non-2xx raises the client's ApiException subclasses
    (ConflictException, UnprocessableEntityException, …) whose .body is the apiserver's Status."""
    req = api.param_serialize(
        method,
        path,
        query_params=list(query),
        header_params={"Accept": "application/json", "Content-Type": content_type},
        body=body,
        auth_settings=["BearerToken"],
    )
    resp = api.call_api(*req, _request_timeout=timeout)
    resp.read()
    if not 200 <= resp.status <= 299:
        api.response_deserialize(resp, {})  # raises the typed ApiException
        raise ApiException(status=resp.status, reason=resp.reason)
    return json.loads(resp.data) if resp.data else None


@dataclass(frozen=True)
class Resource:
    base: str  # /api/v1 or /apis/GROUP/VERSION
    plural: str
    namespaced: bool

    def path(self, name: str | None = None, namespace: str | None = None) -> str:
        parts = [self.base]
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.plural} is namespaced: a namespace is required")
            parts += ["namespaces", namespace]
        parts.append(self.plural)
        if name:
            parts.append(name)
        return "/".join(parts)


def discover_kinds(api: ApiClient, api_version: str) -> dict[str, Resource]:
    """kind -> REST path of what the API server serves in one group-version (empty if none)."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    try:
        doc = request(api, "GET", base)
    except ApiException as exc:
        if exc.status == 404:
            return {}
        raise
    kinds = {}
    for r in doc.get("resources", []):
        if "/" not in r["name"]:  # skip subresources such as pods/status
            kinds[r["kind"]] = Resource(base, r["name"], bool(r["namespaced"]))
    return kinds


class ResourceMapper:
    """kind -> REST path through discovery, per group-version, re-read when a kind is missing (a CRD that
    was just installed). No on-disk cache, unlike the dynamic client's discoverer."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self._cache: dict[str, dict[str, Resource]] = {}

    def _discover(self, api_version: str) -> dict[str, Resource]:
        return discover_kinds(self.api, api_version)

    def resource(self, api_version: str, kind: str) -> Resource:
        found = self._cache.get(api_version, {}).get(kind)
        if found is None:
            self._cache[api_version] = self._discover(api_version)
            found = self._cache[api_version].get(kind)
        if found is None:
            raise LookupError(
                f"the API server does not serve kind {kind} in {api_version} (CRD not installed?)"
            )
        return found


def load_manifests(paths: Iterable[Path | str]) -> list[Manifest]:
    """Multi-document YAML files (or JSON) -> objects, with `kind: List` flattened and empty docs dropped."""
    out: list[Manifest] = []
    for p in paths:
        with open(p) as f:
            for doc in yaml.load_all(f, Loader=_Loader):
                if not doc:
                    continue
                out.extend(doc.get("items", []) if doc.get("kind", "").endswith("List") else [doc])
    return out


def apply(
    api: ApiClient,
    obj: Manifest,
    field_manager: str,
    *,
    force: bool = False,
    namespace: str | None = None,
    mapper: ResourceMapper | None = None,
    dry_run: bool = False,
) -> Manifest:
    """Server-side applies one object. A conflict with another field manager raises ConflictException
    (409) carrying the apiserver's message, unless `force` takes the fields over."""
    mapper = mapper or ResourceMapper(api)
    res = mapper.resource(obj["apiVersion"], obj["kind"])
    ns = (obj.get("metadata", {}).get("namespace") or namespace) if res.namespaced else None
    if res.namespaced and ns and obj.get("metadata", {}).get("namespace") != ns:
        obj = {**obj, "metadata": {**obj["metadata"], "namespace": ns}}
    query = [("fieldManager", field_manager)]
    if force:
        query.append(("force", "true"))
    if dry_run:
        query.append(("dryRun", "All"))
    return request(
        api,
        "PATCH",
        res.path(obj["metadata"]["name"], ns),
        query=query,
        body=obj,
        content_type="application/apply-patch+yaml",
    )


def apply_objects(
    api: ApiClient,
    objs: Iterable[Manifest],
    field_manager: str,
    *,
    force: bool = False,
    namespace: str | None = None,
) -> list[Manifest]:
    mapper = ResourceMapper(api)
    return [apply(api, o, field_manager, force=force, namespace=namespace, mapper=mapper) for o in objs]


def crd_established(api: ApiClient, name: str) -> bool:
    crd = request(api, "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    conds = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
    return conds.get("Established") == "True" and conds.get("NamesAccepted") == "True"


def wait_crds_established(api: ApiClient, names: Iterable[str], timeout: float = 60.0) -> None:
    for name in names:
        wait_for(
            lambda n=name: crd_established(api, n), timeout=timeout, what=f"CRD {name} to be Established"
        )


def _discoverable(api: ApiClient, crd: Manifest) -> bool:
    """Discovery lists the CRD's kind in every served version (it can lag Established for a moment)."""
    spec = crd["spec"]
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        kinds = discover_kinds(api, f"{spec['group']}/{version['name']}")
        if spec["names"]["kind"] not in kinds:
            return False
    return True


def install_crds(
    api: ApiClient,
    paths: Iterable[Path | str],
    field_manager: str = "speculators-tests",
    *,
    force: bool = True,
    timeout: float = 60.0,
) -> list[str]:
    """Applies every CustomResourceDefinition in `paths` (other kinds are an error) and waits until each
    is Established and served by discovery, so custom objects can be created right after. Returns the
    CRD names."""
    objs = load_manifests(paths)
    wrong = [
        f"{o.get('kind')}/{o.get('metadata', {}).get('name')}"
        for o in objs
        if o.get("kind") != "CustomResourceDefinition"
    ]
    if wrong:
        raise ValueError(f"install_crds only installs CRDs; got {', '.join(wrong)}")
    apply_objects(api, objs, field_manager, force=force)
    names = [o["metadata"]["name"] for o in objs]
    wait_crds_established(api, names, timeout)
    for crd in objs:
        name = crd["metadata"]["name"]
        wait_for(lambda c=crd: _discoverable(api, c), timeout=timeout, what=f"CRD {name} in discovery")
    return names
