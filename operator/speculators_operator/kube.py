"""Thin, typed-enough access to the API server: get/list/create/apply/delete/patch-status as plain dicts.

Every write goes through one field manager; applies are server-side applies with force (the operator
owns the fields it renders). The kubernetes client provides configuration, auth and TLS only.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from kubernetes import client, config

from speculators_operator import constants as c

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resource:
    api_version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name)}"
        if sub:
            base += f"/{sub}"
        return base


RESOURCES: dict[str, Resource] = {
    "Job": Resource("batch/v1", "jobs"),
    "Deployment": Resource("apps/v1", "deployments"),
    "Service": Resource("v1", "services"),
    "PersistentVolumeClaim": Resource("v1", "persistentvolumeclaims"),
    "Pod": Resource("v1", "pods"),
    "Event": Resource("v1", "events"),
    "InferenceService": Resource("serving.kserve.io/v1beta1", "inferenceservices"),
    "ServingRuntime": Resource("serving.kserve.io/v1alpha1", "servingruntimes"),
    "LLMInferenceService": Resource("serving.kserve.io/v1alpha2", "llminferenceservices"),
    "TrainJob": Resource("trainer.kubeflow.org/v1alpha1", "trainjobs"),
    "Route": Resource("route.openshift.io/v1", "routes"),
    "Workload": Resource("kueue.x-k8s.io/v1beta2", "workloads"),
    c.TRAINING_KIND: Resource(c.API_VERSION, c.TRAINING_PLURAL),
    c.SPECULATOR_KIND: Resource(c.API_VERSION, c.SPECULATOR_PLURAL),
    c.BENCHMARK_KIND: Resource(c.API_VERSION, c.BENCHMARK_PLURAL),
}


class KubeError(Exception):
    def __init__(self, status: int, reason: str, body: str = "") -> None:
        self.status = status
        self.reason = reason
        self.body = body
        try:
            self.details = json.loads(body) if body else {}
        except ValueError:
            self.details = {}
        super().__init__(f"{status} {reason}: {self.message}")

    @property
    def message(self) -> str:
        return str(self.details.get("message") or self.body[:500])


class Kube:
    """One API client (thread-safe: urllib3's pool), shared by all reconciles."""

    # Discovery answers are kept this long: KServe or Route CRDs installed later are noticed soon after.
    DISCOVERY_TTL_SECONDS = 60.0

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api = api_client
        self._served: dict[str, tuple[float, bool]] = {}

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster config when running in a pod, else $KUBECONFIG / ~/.kube/config."""
        configuration = client.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(client_configuration=configuration)
        # One pooled connection per reconcile thread (urllib3 otherwise opens and drops extra ones).
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, 32)
        return cls(client.ApiClient(configuration))

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        if query:
            path = f"{path}?{urlencode(query)}"
        method_, url, headers, body_, post = self.api.param_serialize(
            method=method, resource_path=path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        response = self.api.call_api(
            method_, url, header_params=headers, body=body_, post_params=post, _request_timeout=timeout
        )
        data = response.read() or b""
        text = data.decode("utf-8", errors="replace")
        if not 200 <= response.status < 300:
            raise KubeError(response.status, response.reason or "", text)
        return json.loads(text) if text else {}

    def get_path(self, path: str) -> dict[str, Any] | None:
        """GET an API path (for resources outside RESOURCES, e.g. Kopf's peering objects); None on 404."""
        try:
            return self._call("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def serves(self, kind: str) -> bool:
        """Whether the API server serves this kind of RESOURCES (discovery of its group/version)."""
        res = RESOURCES[kind]
        now = time.monotonic()
        cached = self._served.get(kind)
        if cached is not None and now - cached[0] < self.DISCOVERY_TTL_SECONDS:
            return cached[1]
        base = "/api/v1" if res.api_version == "v1" else f"/apis/{res.api_version}"
        found = self.get_path(base)
        served = bool(found) and any(r.get("name") == res.plural for r in found.get("resources") or [])
        self._served[kind] = (now, served)
        return served

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", RESOURCES[kind].path(namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self, kind: str, namespace: str | None, selector: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in selector.items())} if selector else None
        result = self._call("GET", RESOURCES[kind].path(namespace), query=query)
        items = result.get("items") or []
        api_version = RESOURCES[kind].api_version
        for item in items:  # list items carry no apiVersion/kind
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create; None when it already exists (get-or-create: names are deterministic)."""
        meta = obj["metadata"]
        try:
            return self._call(
                "POST",
                RESOURCES[obj["kind"]].path(meta.get("namespace")),
                body=obj,
                query={"fieldManager": c.FIELD_MANAGER},
            )
        except KubeError as exc:
            if exc.status == 409:
                return None
            raise

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply with the operator's field manager (force: we own what we render)."""
        meta = obj["metadata"]
        return self._call(
            "PATCH",
            RESOURCES[obj["kind"]].path(meta.get("namespace"), meta["name"]),
            body=obj,
            content_type="application/apply-patch+yaml",
            query={"fieldManager": c.FIELD_MANAGER, "force": "true"},
        )

    def delete(self, kind: str, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete (pods of a Job go with it); False when already gone. `uid` guards against a newer object."""
        body: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": "Background",
        }
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self._call("DELETE", RESOURCES[kind].path(namespace, name), body=body)
            return True
        except KubeError as exc:
            if exc.status in (404, 409):
                return False
            raise

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch status through the status subresource (lists such as conditions go whole)."""
        return self._call(
            "PATCH",
            RESOURCES[kind].path(namespace, name, "status"),
            body={"status": status},
            content_type="application/merge-patch+json",
            query={"fieldManager": c.FIELD_MANAGER},
        )

    def post_event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on `owner` (what `kubectl describe` shows)."""
        meta = owner["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": owner.get("apiVersion", c.API_VERSION),
                "kind": owner["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": c.OPERATOR_NAME},
            "reportingComponent": c.OPERATOR_NAME,
            "reportingInstance": _HOSTNAME,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._call("POST", RESOURCES["Event"].path(meta["namespace"]), body=event)


_HOSTNAME = socket.gethostname()[:128]
