"""backend: kserve and spec.route on the real API server, with the real KServe and OpenShift Route CRDs.

- What the operator renders (ServingRuntime, InferenceService, Route) over a matrix of specs passes the
  CRDs' schemas and CEL rules (server-side dry-run).
- End to end under the chart's own permissions: the operator creates the KServe children and the Route;
  the test then writes the InferenceService's status as KServe's controller would and the Route's as the
  OpenShift router would (neither runs here: those two writes are the stand-ins, nothing else is), and the
  Speculator becomes Ready with the Route's admitted host as status.url. Switching the backend back
  replaces the KServe children with a Deployment and a Service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from operator_process import operator_from_chart
from shiplib import install_ship_crds, speculator_body

from speculators_operator.api.common import ModelSource
from speculators_operator.render import kserve, route
from speculators_operator.render.speculator import ResolvedDraft, SpeculatorContext

pytestmark = pytest.mark.slow


@pytest.fixture
def ship_crds(install_crds: Any, third_party_crds: list[str]) -> list[str]:
    return install_ship_crds(install_crds, third_party_crds)


API = "speculators.ai/v1alpha1"
ISVC = "serving.kserve.io/v1beta1"
HOST = "granite-demo.apps.cluster.example.com"

SPECS: dict[str, dict[str, Any]] = {
    "hub": {"route": {"enabled": True}},
    "secret-verifier-cache": {
        "verifier": {"uri": "s3://models/granite", "secretRef": {"name": "s3"}},
        "cache": {"size": "100Gi"},
        "replicas": 2,
        "route": {"enabled": True, "host": HOST},
    },
    "pvc-stopped": {"verifier": {"uri": "pvc://models/granite"}, "replicas": 0},
    "scheduled": {
        "scheduling": {
            "nodeSelector": {"gpu": "h100"},
            "tolerations": [{"key": "gpu", "operator": "Exists"}],
        },
        "podMetadata": {"labels": {"team": "ml"}, "annotations": {"a": "b"}},
        "resources": {"limits": {"nvidia.com/gpu": 2, "memory": "64Gi"}},
        "vllm": {"tensorParallelSize": 2, "env": [{"name": "X", "value": "1"}]},
    },
    # A retrained draft on KServe's own canary (spec.canary) and a Route that splits like its gateway.
    "canary": {"replicas": 4, "canary": {"replicas": 1}, "route": {"enabled": True}},
}
CANARY_DRAFT = ResolvedDraft(ModelSource(uri="pvc://chat-r1-workspace/chat-r1/model"), "eagle3", 3)


@pytest.mark.parametrize("key", SPECS)
def test_rendered_kserve_objects_pass_the_real_crds(
    key: str, kube_api: Any, ship_crds: list[str], namespace: str
) -> None:
    body = speculator_body(f"spd-{key}", namespace, backend="kserve", **SPECS[key])
    ctx = SpeculatorContext.of(body)
    draft = ResolvedDraft(
        ModelSource(uri="hf://RedHatAI/granite-3.3-8b-instruct-speculator.eagle3"), "eagle3", 3
    )
    canary = CANARY_DRAFT if key == "canary" else None
    objects = [kserve.serving_runtime(ctx, draft), kserve.inference_service(ctx, draft, canary)]
    if ctx.spec.route.enabled:
        objects.append(route.route(ctx, kserve.canary_traffic_percent(ctx) if canary else None))
    for obj in objects:
        created = kube_api.create(obj, namespace, dry_run=True)
        # Nothing we set was pruned: every field is one the CRD knows.
        assert created["spec"].items() >= {k: v for k, v in obj["spec"].items() if k != "predictor"}.items()
        if obj["kind"] == "InferenceService":
            predictor = created["spec"]["predictor"]
            for field, value in obj["spec"]["predictor"].items():
                assert predictor[field] == value, field
            if canary:  # KServe 0.20's CRD keeps the whole canary (an older one would prune it)
                assert created["spec"]["canary"] == obj["spec"]["canary"]


def _spd(kube_api: Any, namespace: str, name: str) -> dict[str, Any]:
    return kube_api.get(API, "Speculator", name, namespace)


def _cond(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == ctype), {})


def _status_patch(kube_api: Any, path: str, status: dict[str, Any]) -> None:
    kube_api.request(
        "PATCH", f"{path}/status", body={"status": status}, content_type="application/merge-patch+json"
    )


def test_speculator_on_kserve_with_a_route_under_the_charts_permissions(
    cluster: Any, kube_api: Any, ship_crds: list[str], namespace: str, wait_for: Any, tmp_path: Path
) -> None:
    with operator_from_chart(cluster, kube_api, namespace, tmp_path, wait_for):
        spd = speculator_body("granite", namespace, backend="kserve", route={"enabled": True, "host": HOST})
        spd["metadata"] = {
            "name": "granite",
            "annotations": {"openshift.io/display-name": "Granite + EAGLE-3"},
        }
        kube_api.create(spd, namespace)

        isvc = wait_for(
            lambda: _get_or_none(kube_api, ISVC, "InferenceService", "granite", namespace),
            bool,
            timeout=60,
            what="InferenceService granite",
        )
        assert isvc["metadata"]["labels"]["opendatahub.io/dashboard"] == "true"
        assert isvc["metadata"]["annotations"]["openshift.io/display-name"] == "Granite + EAGLE-3"
        assert kube_api.get("serving.kserve.io/v1alpha1", "ServingRuntime", "granite-vllm", namespace)
        rt = wait_for(
            lambda: _get_or_none(kube_api, "route.openshift.io/v1", "Route", "granite", namespace),
            bool,
            timeout=60,
            what="Route granite",
        )
        assert rt["spec"]["to"]["name"] == "granite-predictor" and rt["spec"]["host"] == HOST
        assert _get_or_none(kube_api, "apps/v1", "Deployment", "granite-vllm", namespace) is None
        # Status is written after the children are applied: wait for it rather than read once.
        status = wait_for(
            lambda: _spd(kube_api, namespace, "granite").get("status"),
            lambda st: bool(st) and any(c["type"] == "DeploymentReady" for c in st.get("conditions", [])),
            timeout=60,
            what="Speculator granite's status",
        )
        assert _cond(status, "DeploymentReady")["status"] == "Unknown"

        # Stand-in for KServe's controller: the InferenceService becomes Ready with an in-cluster URL.
        base = f"/apis/{ISVC}/namespaces/{namespace}/inferenceservices/granite"
        internal = f"http://granite-predictor.{namespace}.svc.cluster.local"
        _status_patch(
            kube_api,
            base,
            {
                "observedGeneration": isvc["metadata"]["generation"],
                "url": internal,
                "conditions": [
                    {
                        "type": "PredictorReady",
                        "status": "True",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    },
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                ],
            },
        )
        status = wait_for(
            lambda: _spd(kube_api, namespace, "granite").get("status") or {},
            lambda s: _cond(s, "Ready").get("status") == "True",
            timeout=60,
            what="Speculator granite Ready from the InferenceService",
        )
        assert status["url"] == internal and status["phase"] == "Running"
        assert _cond(status, "RouteAdmitted")["reason"] == "Pending"

        # Stand-in for the OpenShift router: it admits the Route under its host.
        _status_patch(
            kube_api,
            f"/apis/route.openshift.io/v1/namespaces/{namespace}/routes/granite",
            {
                "ingress": [
                    {
                        "host": HOST,
                        "routerName": "default",
                        "conditions": [
                            {
                                "type": "Admitted",
                                "status": "True",
                                "lastTransitionTime": "2026-01-01T00:00:00Z",
                            }
                        ],
                    }
                ]
            },
        )
        status = wait_for(
            lambda: _spd(kube_api, namespace, "granite").get("status") or {},
            lambda s: s.get("url") == f"https://{HOST}",
            timeout=60,
            what="status.url from the admitted Route",
        )
        assert _cond(status, "RouteAdmitted")["status"] == "True"

        # Back to a plain Deployment: the KServe children go, the Deployment and Service come.
        kube_api.patch(API, "Speculator", "granite", {"spec": {"backend": "deployment"}}, namespace)
        wait_for(
            lambda: _get_or_none(kube_api, ISVC, "InferenceService", "granite", namespace),
            lambda obj: obj is None or bool(obj["metadata"].get("deletionTimestamp")),
            timeout=60,
            what="InferenceService granite deleted",
        )
        wait_for(
            lambda: _get_or_none(kube_api, "apps/v1", "Deployment", "granite-vllm", namespace),
            bool,
            timeout=60,
            what="Deployment granite-vllm",
        )
        wait_for(
            lambda: kube_api.get("route.openshift.io/v1", "Route", "granite", namespace)["spec"]["to"][
                "name"
            ],
            lambda name: name == "granite",
            timeout=60,
            what="the Route retargeted at Service granite",
        )


def _get_or_none(
    kube_api: Any, api_version: str, kind: str, name: str, namespace: str
) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return kube_api.get(api_version, kind, name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
