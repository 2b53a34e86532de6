"""The closed loop on backend kserve against the real control plane and KServe 0.20's real CRDs: drift ->
retrain -> the InferenceService's own spec.canary -> promoted; an operator killed mid-canary resumes it.

Stand-ins, for what cannot run here: KServe's controller (hack/localrun/kserve_standin.py: it turns the
InferenceService into predictor Deployments and writes its status as KServe 0.20 does; the real
Deployment controller and kwok run their pods) and the vLLM servers (vllm_standin.Fleet, one per Running
pod, whose acceptance depends on the draft that pod's spec names).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Kube, OperatorProcess
from localrun.vllm_standin import Scenario
from spd_testlib import DATASET, cond
from standin_fleet import fleet, kserve_controller
from test_cluster_retrain_loop import BETTER, DRIFTED, HEALTHY, finish_training, looped_speculator

pytestmark = pytest.mark.kwok

ISVC = "serving.kserve.io/v1beta1"
NEW = "pvc://kchat-r1-workspace/kchat-r1/model"


def canary_phase(k: Kube, name: str, phase: str) -> dict[str, Any]:
    return k.wait_status(
        "Speculator", name, lambda s: (s.get("canary") or {}).get("phase") == phase, phase, timeout=120
    )


def kserve_looped(name: str) -> dict[str, Any]:
    """The Deployment scenario's Speculator on KServe: no capture (the proxy is the Deployment backend's),
    so the retrain trains on a dataset; 2 replicas, so KServe runs 1 stable + 1 canary pod."""
    body = looped_speculator(name)
    spec = body["spec"]
    spec.update(backend="kserve", replicas=2, traffic={"capture": {"enabled": False}})
    spec["retrain"]["template"]["data"] = {"datasets": [{"uri": DATASET}]}
    return body


def test_kserve_drift_retrains_and_its_canary_is_promoted_through_an_operator_restart(
    third_party_crds: list[str], operator: OperatorProcess, k: Kube, kube_api: Any
) -> None:
    scenario = Scenario(conditional=HEALTHY, by_draft={"kchat-r1": BETTER})
    k.create(kserve_looped("kchat"))
    with kserve_controller(kube_api, k.ns) as kserve, fleet(k, "kchat", scenario):
        k.wait_phase("Speculator", "kchat", "Running", timeout=90)
        status = k.wait_status(
            "Speculator", "kchat", lambda s: (s.get("retrain") or {}).get("baseline"), "baseline", timeout=90
        )
        assert status["url"] == f"http://kchat-predictor.{k.ns}.svc.cluster.local"
        scenario.conditional = DRIFTED
        training = k.wait(lambda: k.get("SpeculatorTraining", "kchat-r1"), what="retrain", timeout=90)
        assert training["spec"]["data"]["datasets"] == [{"uri": DATASET}]
        finish_training(k, "kchat-r1", 3.1)

        status = canary_phase(k, "kchat", "Running")
        assert status["canary"]["deployment"] == "kchat-canary-predictor"
        isvc = kube_api.get(ISVC, "InferenceService", "kchat", k.ns)
        (entry,) = isvc["spec"]["canary"]  # kept by KServe 0.20's CRD, as rendered
        assert entry["predictor"]["name"] == "canary" and entry["trafficPercent"] == 50
        canary = k.get("Deployment", "kchat-canary-predictor")
        template = canary["spec"]["template"]
        assert template["metadata"]["labels"]["speculators.ai/track"] == "canary"
        assert template["metadata"]["annotations"]["speculators.ai/draft"] == NEW
        args = template["spec"]["containers"][0]["args"]
        assert json.loads(args[args.index("--speculative-config") + 1])["model"].endswith("kchat-r1/model")
        assert not [d for d in k.list("Deployment") if d["metadata"]["name"].startswith("kchat-vllm")]

        # Killed mid-canary: the new process resumes the same canary from status.
        started = status["canary"]["startTime"]
        operator.kill()
        operator.start()
        status = canary_phase(k, "kchat", "Promoted")
        assert status["canary"]["startTime"] == started
        assert status["canary"]["decision"].startswith("Better: ")
        assert cond(status, "CanaryPromoted")["status"] == "True"
        assert status["draft"]["uri"] == NEW and status["draft"]["training"] == "kchat-r1"
        stable = k.get("Deployment", "kchat-predictor")
        assert stable["spec"]["template"]["metadata"]["annotations"]["speculators.ai/draft"] == NEW
        isvc = kube_api.get(ISVC, "InferenceService", "kchat", k.ns)
        assert "canary" not in isvc["spec"]
        k.wait(lambda: k.get("Deployment", "kchat-canary-predictor"), lambda d: d is None, what="canary gone")
        assert not kserve.errors, kserve.errors
    reasons = [e["reason"] for e in k.events("kchat")]
    assert reasons.count("CanaryStarted") == 1 and "CanaryPromoted" in reasons
    assert k.get("Speculator", "kchat")["metadata"]["generation"] == 1  # spec was never written
