"""Typed clients for one cluster, plus server-side apply and raw requests (returning plain dicts)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from kubecluster import manifests as ssa
from kubecluster import new_api_client

TEST_FIELD_MANAGER = "speculators-tests"


@dataclass
class KubeApi:
    api: client.ApiClient
    core: client.CoreV1Api = field(init=False)
    apps: client.AppsV1Api = field(init=False)
    batch: client.BatchV1Api = field(init=False)
    storage: client.StorageV1Api = field(init=False)
    custom: client.CustomObjectsApi = field(init=False)
    apiext: client.ApiextensionsV1Api = field(init=False)

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.storage = client.StorageV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.apiext = client.ApiextensionsV1Api(self.api)
        self._mapper = ssa.ResourceMapper(self.api)

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path | str) -> KubeApi:
        return cls(new_api_client(kubeconfig))

    def close(self) -> None:
        self.api.close()

    def apply(
        self,
        obj: dict[str, Any],
        *,
        field_manager: str = TEST_FIELD_MANAGER,
        force: bool = False,
        namespace: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Server-side apply; a conflict raises kubernetes.client.exceptions.ConflictException (409)."""
        return ssa.apply(
            self.api,
            obj,
            field_manager,
            force=force,
            namespace=namespace,
            mapper=self._mapper,
            dry_run=dry_run,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        return ssa.request(self.api, method, path, query=query, body=body, content_type=content_type)

    def serves(self, api_version: str, kind: str) -> bool:
        """Whether the cluster serves this kind (discovery; a CRD installed a moment ago counts)."""
        try:
            self._mapper.resource(api_version, kind)
        except LookupError:
            return False
        return True

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        """Any object as a dict (404 raises NotFoundException)."""
        res = self._mapper.resource(api_version, kind)
        return dict(self.request("GET", res.path(name, namespace)))

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        res = self._mapper.resource(api_version, kind)
        query = [("labelSelector", selector)] if selector else []
        return list(self.request("GET", res.path(None, namespace), query=query)["items"])

    def create(
        self, obj: dict[str, Any], namespace: str | None = None, *, dry_run: bool = False
    ) -> dict[str, Any]:
        """POSTs the object (admission and validation errors raise the client's ApiException subclasses)."""
        res = self._mapper.resource(obj["apiVersion"], obj["kind"])
        ns = (obj.get("metadata", {}).get("namespace") or namespace) if res.namespaced else None
        query = [("dryRun", "All")] if dry_run else []
        return dict(self.request("POST", res.path(None, ns), query=query, body=obj))

    def patch(
        self, api_version: str, kind: str, name: str, patch: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """A JSON merge patch (e.g. {"metadata": {"annotations": {"k": None}}} removes an annotation)."""
        res = self._mapper.resource(api_version, kind)
        return dict(
            self.request(
                "PATCH", res.path(name, namespace), body=patch, content_type="application/merge-patch+json"
            )
        )

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        res = self._mapper.resource(api_version, kind)
        self.request("DELETE", res.path(name, namespace), query=[("propagationPolicy", "Background")])
