"""What admission cannot know shows on the resource: a child the API server refuses (here: a namespace
ResourceQuota) becomes Ready=False with reason ChildRejected and the API server's own message, a Warning
Event, Argo CD health Degraded, retries with backoff instead of a hot loop — and fixing the spec clears it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Kube, OperatorProcess
from spd_testlib import INSPECT, REPO, cond, speculator_body, training_body

sys.path.insert(0, str(REPO / "tests" / "ship"))
from argocd_lua import Health, run_health_file

HEALTH = REPO / "argocd" / "resource_customizations" / "speculators.ai"


def health(kind: str, obj: dict[str, Any]) -> Health:
    """Argo CD's verdict with the health check we ship (lupa, Lua 5.1, Argo CD's sandbox)."""
    return run_health_file(HEALTH / kind / "health.lua", obj)


pytestmark = pytest.mark.kwok


def _quota(k: Kube, name: str, hard: dict[str, str]) -> None:
    k.create(
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}, "spec": {"hard": hard}}
    )


def _rejected(k: Kube, kind: str, name: str) -> dict[str, Any]:
    return k.wait_status(
        kind,
        name,
        lambda s: (cond(s, "Ready") if s.get("conditions") else {}).get("reason") == "ChildRejected",
        "ChildRejected",
    )


def _reconciles(operator: OperatorProcess) -> float:
    """Reconciles the operator ran so far (its own metric)."""
    metrics = operator.metrics()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("speculators_operator_reconciles_total")
    )


def test_a_refused_service_shows_as_child_rejected_and_a_fix_clears_it(
    operator: OperatorProcess, k: Kube
) -> None:
    _quota(k, "no-load-balancers", {"services.loadbalancers": "0"})
    k.create(speculator_body("lb", method="eagle3", numSpeculativeTokens=3, service={"type": "LoadBalancer"}))
    status = _rejected(k, "Speculator", "lb")
    ready = cond(status, "Ready")
    assert ready["status"] == "False" and status["phase"] == "Failed"
    assert "the API server refused Service lb" in ready["message"]
    assert "exceeded quota: no-load-balancers" in ready["message"]  # the API server's own words
    body = k.get("Speculator", "lb")
    verdict = health("Speculator", body)
    assert verdict.status == "Degraded" and "ChildRejected" in verdict.message
    # The Event follows the status write (the error is reported once the reconcile has failed).
    rejected = lambda: [e for e in k.events("lb") if e["reason"] == "ChildRejected"]  # noqa: E731
    events = k.wait(rejected, lambda es: len(es) > 0, what="ChildRejected Event")
    assert events[0]["type"] == "Warning"

    # Backoff, not a hot loop: the retries wait 1, 2, 5, 10 s ... while the cause stands.
    k.wait(lambda: operator.log_path.read_text(), lambda log: "(retry in 10s)" in log, what="backoff at 10 s")
    assert _reconciles(operator) < 15
    # Retries of the same error do not flood the namespace: still one Event, counted once.
    assert len(rejected()) == 1

    k.patch("Speculator", "lb", {"spec": {"service": {"type": "ClusterIP"}}})
    status = k.wait_phase("Speculator", "lb", "Running")
    assert cond(status, "Ready")["status"] == "True"
    assert k.get("Service", "lb")["spec"]["type"] == "ClusterIP"


def test_a_refused_workspace_claim_shows_on_the_training(
    operator: OperatorProcess, k: Kube, tmp_path: Path
) -> None:
    k.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "shared-workspace"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }
    )
    _quota(k, "one-claim", {"persistentvolumeclaims": "1"})
    k.wait(
        lambda: (k.get("ResourceQuota", "one-claim", "v1") or {}).get("status", {}).get("used") or {},
        lambda used: used.get("persistentvolumeclaims") == "1",
        what="the quota counts the existing claim",
    )
    k.create(training_body("quota", training={"mode": "online"}))
    status = _rejected(k, "SpeculatorTraining", "quota")
    ready = cond(status, "Ready")
    assert (
        "PersistentVolumeClaim quota-workspace" in ready["message"] and "exceeded quota" in ready["message"]
    )
    assert health("SpeculatorTraining", k.get("SpeculatorTraining", "quota")).status == "Degraded"
    assert k.get("Job", "quota-prepare") is None  # nothing ran without its workspace

    # The fix: use the existing claim. The condition clears and the pipeline starts.
    k.patch("SpeculatorTraining", "quota", {"spec": {"output": {"pvc": {"claimName": "shared-workspace"}}}})
    k.wait(lambda: k.get("Job", "quota-prepare"), what="prepare Job")
    status = k.wait_status(
        "SpeculatorTraining", "quota", lambda s: cond(s, "Ready")["reason"] != "ChildRejected", "cleared"
    )
    assert cond(status, "Ready")["status"] == "Unknown" and status["phase"] in ("Pending", "PreparingData")


def test_a_draft_for_another_verifier_is_refused_with_the_fix(operator: OperatorProcess, k: Kube) -> None:
    """The resolve Job reads the draft's config: trained for Llama 3.1 8B, asked to serve Qwen3 — vLLM would
    load it (or crash on the hidden size); the operator says what is wrong and deploys nothing."""
    message = {"sim.speculators.ai/termination-message": json.dumps(INSPECT)}
    k.create(
        speculator_body(
            "mismatch", verifier={"uri": "hf://Qwen/Qwen3-8B"}, podMetadata={"annotations": message}
        )
    )
    status = k.wait_status(
        "Speculator", "mismatch", lambda s: s.get("phase") == "Failed", "failed on the draft's verifier"
    )
    drafted = cond(status, "DraftResolved")
    assert (drafted["status"], drafted["reason"]) == ("False", "VerifierMismatch")
    assert "set spec.verifier.uri to hf://meta-llama/Llama-3.1-8B-Instruct" in drafted["message"]
    assert k.get("Deployment", "mismatch-vllm") is None
    assert health("Speculator", k.get("Speculator", "mismatch")).status == "Degraded"
    k.patch(
        "Speculator", "mismatch", {"spec": {"verifier": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"}}}
    )
    status = k.wait_phase("Speculator", "mismatch", "Running")
    assert cond(status, "DraftResolved")["reason"] == "Resolved"
