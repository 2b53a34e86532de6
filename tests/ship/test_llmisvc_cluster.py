"""backend llmisvc on the real API server with KServe 0.20's real LLMInferenceService CRD.

- What the operator renders over a matrix of specs passes the CRD's schema and CEL rules (server-side
  dry-run), and nothing is pruned.
- End to end under the chart's own permissions: the operator creates the LLMInferenceService; the test
  writes its status as KServe's controller would (it cannot run here: that write is the stand-in, nothing
  else is), and the Speculator becomes Ready with its URL; switching the backend back replaces it with a
  Deployment and a Service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from operator_process import operator_from_chart
from shiplib import install_ship_crds, speculator_body
from test_kserve_cluster import _get_or_none, _spd, _status_patch

from speculators_operator.api.common import ModelSource
from speculators_operator.render import llmisvc
from speculators_operator.render.speculator import ResolvedDraft, SpeculatorContext

pytestmark = pytest.mark.slow

API = "speculators.ai/v1alpha1"
LLMISVC = "serving.kserve.io/v1alpha2"

SPECS: dict[str, dict[str, Any]] = {
    "hub": {},
    "secret-verifier": {
        "verifier": {"uri": "s3://models/granite", "secretRef": {"name": "s3"}},
        "replicas": 2,
    },
    "pvc-stopped-no-router": {
        "verifier": {"uri": "pvc://models/granite"},
        "replicas": 0,
        "llmisvc": {"router": {}, "baseRefs": ["my-preset"]},
    },
    "scheduled-tp2": {
        "scheduling": {
            "nodeSelector": {"gpu": "h100"},
            "tolerations": [{"key": "gpu", "operator": "Exists"}],
        },
        "podMetadata": {"labels": {"team": "ml"}},
        "resources": {"limits": {"nvidia.com/gpu": 2, "memory": "64Gi"}},
        "vllm": {"tensorParallelSize": 2, "env": [{"name": "X", "value": "1"}], "image": "registry/vllm:1"},
    },
}


@pytest.fixture
def ship_crds(install_crds: Any, third_party_crds: list[str]) -> list[str]:
    return install_ship_crds(install_crds, third_party_crds)


@pytest.mark.parametrize("key", SPECS)
def test_rendered_llm_inference_services_pass_the_real_crd(
    key: str, kube_api: Any, ship_crds: list[str], namespace: str
) -> None:
    body = speculator_body(f"spd-{key}", namespace, backend="llmisvc", **SPECS[key])
    ctx = SpeculatorContext.of(body)
    draft = ResolvedDraft(ModelSource(uri="pvc://chat-r1-workspace/chat-r1/model"), "eagle3", 3)
    obj = llmisvc.llm_inference_service(ctx, draft)
    created = kube_api.create(obj, namespace, dry_run=True)
    for field, value in obj["spec"].items():
        if field == "template":  # the API server adds pod-spec defaults around what we set
            for sub, part in value.items():
                assert created["spec"]["template"][sub] == part or sub == "containers", sub
            (main,) = created["spec"]["template"]["containers"]
            assert {k: main[k] for k in value["containers"][0]} == value["containers"][0]
        else:
            assert created["spec"][field] == value, field


def test_speculator_on_an_llm_inference_service_under_the_charts_permissions(
    cluster: Any, kube_api: Any, ship_crds: list[str], namespace: str, wait_for: Any, tmp_path: Path
) -> None:
    with operator_from_chart(cluster, kube_api, namespace, tmp_path, wait_for):
        spd = speculator_body("granite", namespace, backend="llmisvc")
        spd["metadata"] = {
            "name": "granite",
            "annotations": {"openshift.io/display-name": "Granite + EAGLE-3"},
        }
        kube_api.create(spd, namespace)
        obj = wait_for(
            lambda: _get_or_none(kube_api, LLMISVC, "LLMInferenceService", "granite", namespace),
            bool,
            timeout=60,
            what="LLMInferenceService granite",
        )
        assert obj["metadata"]["labels"]["opendatahub.io/dashboard"] == "true"
        assert obj["metadata"]["annotations"]["openshift.io/display-name"] == "Granite + EAGLE-3"
        assert obj["spec"]["model"]["uri"] == "hf://ibm-granite/granite-3.3-8b-instruct"
        assert _get_or_none(kube_api, "apps/v1", "Deployment", "granite-vllm", namespace) is None
        # Status is written after the children are applied: wait for it rather than read once.
        status = wait_for(
            lambda: _spd(kube_api, namespace, "granite").get("status"),
            lambda st: bool(st) and any(c["type"] == "DeploymentReady" for c in st.get("conditions", [])),
            timeout=60,
            what="Speculator granite's status",
        )
        ready = next(c for c in status["conditions"] if c["type"] == "DeploymentReady")
        assert ready["status"] == "Unknown"

        # Stand-in for KServe's controller: presets merged, the workload rolling, then ready.
        base = f"/apis/{LLMISVC}/namespaces/{namespace}/llminferenceservices/granite"
        stamp = "2026-01-01T00:00:00Z"

        def conditions(ready: str, reason: str) -> list[dict[str, Any]]:
            return [
                {"type": "PresetsCombined", "status": "True", "lastTransitionTime": stamp},
                {"type": "MainWorkloadReady", "status": ready, "reason": reason, "lastTransitionTime": stamp},
                {"type": "WorkloadsReady", "status": ready, "reason": reason, "lastTransitionTime": stamp},
                {"type": "RouterReady", "status": "True", "lastTransitionTime": stamp},
                {"type": "Ready", "status": ready, "reason": reason, "lastTransitionTime": stamp},
            ]

        generation = obj["metadata"]["generation"]
        _status_patch(
            kube_api,
            base,
            {
                "observedGeneration": generation,
                "conditions": conditions("False", "MinimumReplicasUnavailable"),
            },
        )
        status = wait_for(
            lambda: _spd(kube_api, namespace, "granite").get("status") or {},
            lambda s: (
                "MainWorkloadReady"
                in next(c for c in s["conditions"] if c["type"] == "DeploymentReady")["message"]
            ),
            timeout=60,
            what="the rollout shown as progress",
        )
        assert status["phase"] == "Deploying"
        public = "https://granite-ns.apps.example.com"
        _status_patch(
            kube_api,
            base,
            {
                "observedGeneration": generation,
                "url": public,
                "addresses": [
                    {"url": f"https://granite-kserve-workload-svc.{namespace}.svc.cluster.local:8000"}
                ],
                "conditions": conditions("True", ""),
            },
        )
        status = wait_for(
            lambda: _spd(kube_api, namespace, "granite").get("status") or {},
            lambda s: s.get("phase") == "Running",
            timeout=60,
            what="Speculator granite Running from the LLMInferenceService",
        )
        assert status["url"] == public

        # Back to a plain Deployment: the LLMInferenceService goes, the Deployment and Service come.
        kube_api.patch(API, "Speculator", "granite", {"spec": {"backend": "deployment"}}, namespace)
        wait_for(
            lambda: _get_or_none(kube_api, LLMISVC, "LLMInferenceService", "granite", namespace),
            lambda found: found is None or bool(found["metadata"].get("deletionTimestamp")),
            timeout=60,
            what="LLMInferenceService granite deleted",
        )
        wait_for(
            lambda: _get_or_none(kube_api, "apps/v1", "Deployment", "granite-vllm", namespace),
            bool,
            timeout=60,
            what="Deployment granite-vllm",
        )
