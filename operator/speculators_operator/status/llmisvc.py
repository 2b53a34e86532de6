"""Folding a KServe LLMInferenceService's status into the Speculator's DeploymentReady condition and URL.

KServe 0.20 (pkg/apis/serving/v1alpha2/llm_inference_service_lifecycle.go) reports Knative-style
conditions: `Ready` rolls up `WorkloadsReady` (MainWorkloadReady, ...) and `RouterReady`; `PresetsCombined`
says whether its LLMInferenceServiceConfig presets merged. MainWorkloadReady copies the Deployment's own
Available/Progressing reasons, so `MinimumReplicasUnavailable` during a rollout is progress, not failure:
False counts only for a failure reason, a broken preset, or a crash-looping vLLM pod.
"""

from __future__ import annotations

from typing import Any

from speculators_operator.render.speculator import SpeculatorContext
from speculators_operator.status.conditions import Cond, find
from speculators_operator.status.kserve import fold

FAILURE_REASONS = {
    "ProgressDeadlineExceeded",
    "ConfigNotFound",
    "CombineBaseError",
    "ScalingCRDNotFound",
}


def url(obj: dict[str, Any] | None) -> str | None:
    """status.url (the external address when there is one), else the first of status.addresses."""
    status = (obj or {}).get("status") or {}
    if status.get("url"):
        return str(status["url"])
    for address in status.get("addresses") or []:
        if address.get("url"):
            return str(address["url"])
    return None


def _failure(status: dict[str, Any]) -> Cond | None:
    for cond in status.get("conditions") or []:
        reason = str(cond.get("reason") or "")
        failed = reason in FAILURE_REASONS or (reason.startswith("Reconcile") and reason.endswith("Error"))
        if cond.get("status") == "False" and failed:
            text = f"LLMInferenceService {cond.get('type')}: {cond.get('message') or reason}"
            return Cond("DeploymentReady", "False", reason, text)
    return None


def deployment_condition(
    ctx: SpeculatorContext, obj: dict[str, Any] | None, pod_failure: Cond | None
) -> Cond:
    status = (obj or {}).get("status") or {}
    stopped = (find(status.get("conditions"), "MainWorkloadReady") or {}).get("reason") == "Stopped"
    return fold("LLMInferenceService", ctx, obj, _failure(status) or pod_failure, stopped)
