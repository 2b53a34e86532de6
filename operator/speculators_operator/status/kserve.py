"""Folding a KServe InferenceService's status into the Speculator's DeploymentReady condition and URL.

KServe reports `Ready` plus per-component conditions, `modelStatus` and `url`. In progress must stay
`Unknown` (Argo CD: Progressing) and only real failures become `False` (Degraded): KServe also shows
Ready=False while a rollout is merely under way, so False counts only with a failure reason, a blocked
model transition, or a vLLM pod that is crash-looping.
"""

from __future__ import annotations

from typing import Any

from speculators_operator.render.kserve import STOP
from speculators_operator.render.speculator import SpeculatorContext
from speculators_operator.status.conditions import Cond, find

# KServe condition reasons that mean "broken, not starting" (pkg/apis/serving/v1beta1).
FAILURE_REASONS = {
    "ModelLoadFailed",
    "RuntimeUnhealthy",
    "RuntimeNotRecognized",
    "RuntimeDisabled",
    "NoSupportingRuntime",
    "InvalidGPUAllocation",
    "InvalidPredictorSpec",
    "ServingRuntimeNotFound",
}
BLOCKED_TRANSITIONS = {"BlockedByFailedLoad", "InvalidSpec"}


def url(isvc: dict[str, Any] | None) -> str | None:
    """The URL KServe reports (external when an ingress exists, else the in-cluster address)."""
    status = (isvc or {}).get("status") or {}
    return status.get("url") or (status.get("address") or {}).get("url")


def _failure(status: dict[str, Any]) -> Cond | None:
    model = status.get("modelStatus") or {}
    if model.get("transitionStatus") in BLOCKED_TRANSITIONS:
        info = model.get("lastFailureInfo") or {}
        reason = info.get("reason") or model["transitionStatus"]
        return Cond(
            "DeploymentReady", "False", reason, info.get("message") or f"model {model['transitionStatus']}"
        )
    for cond in status.get("conditions") or []:
        if cond.get("status") == "False" and cond.get("reason") in FAILURE_REASONS:
            text = f"InferenceService {cond.get('type')}: {cond.get('message') or cond['reason']}"
            return Cond("DeploymentReady", "False", cond["reason"], text)
    return None


def deployment_condition(
    ctx: SpeculatorContext, isvc: dict[str, Any] | None, pod_failure: Cond | None
) -> Cond:
    """DeploymentReady of a kserve Speculator; `pod_failure` is what the vLLM pods say (crash loops)."""
    name = ctx.name
    if isvc is None:
        return Cond("DeploymentReady", "Unknown", "Creating", f"creating InferenceService {name}")
    status = isvc.get("status") or {}
    generation = isvc["metadata"].get("generation")
    if generation is not None and status.get("observedGeneration") != generation:
        return Cond(
            "DeploymentReady",
            "Unknown",
            "Progressing",
            f"KServe has not observed InferenceService {name} yet",
        )
    failure = _failure(status) or pod_failure
    if failure is not None:
        return failure
    if ctx.spec.replicas == 0:
        stopped = find(status.get("conditions"), "Stopped")
        if (isvc["metadata"].get("annotations") or {}).get(STOP) == "true" and (stopped or {}).get(
            "status"
        ) == "True":
            return Cond("DeploymentReady", "True", "ScaledToZero", "replicas is 0 (InferenceService stopped)")
        return Cond("DeploymentReady", "Unknown", "Stopping", f"stopping InferenceService {name}")
    ready = find(status.get("conditions"), "Ready")
    if ready is not None and ready.get("status") == "True":
        return Cond("DeploymentReady", "True", "Available", f"InferenceService {name} is ready")
    detail = (ready or {}).get("message") or (ready or {}).get("reason") or "waiting for KServe"
    return Cond("DeploymentReady", "Unknown", "Progressing", f"InferenceService {name}: {detail}")
