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


def fold(
    kind: str,
    ctx: SpeculatorContext,
    obj: dict[str, Any] | None,
    failure: Cond | None,
    stopped: bool,
) -> Cond:
    """DeploymentReady of a KServe object (InferenceService, LLMInferenceService): Creating, not observed
    yet, failed, stopped for replicas 0, Ready, else progressing with what KServe says it waits for."""
    name = ctx.name
    if obj is None:
        return Cond("DeploymentReady", "Unknown", "Creating", f"creating {kind} {name}")
    status = obj.get("status") or {}
    generation = obj["metadata"].get("generation")
    if generation is not None and status.get("observedGeneration") != generation:
        return Cond("DeploymentReady", "Unknown", "Progressing", f"KServe has not observed {kind} {name} yet")
    if failure is not None:
        return failure
    if ctx.spec.replicas == 0:
        if (obj["metadata"].get("annotations") or {}).get(STOP) == "true" and stopped:
            return Cond("DeploymentReady", "True", "ScaledToZero", f"replicas is 0 ({kind} stopped)")
        return Cond("DeploymentReady", "Unknown", "Stopping", f"stopping {kind} {name}")
    ready = find(status.get("conditions"), "Ready")
    if ready is not None and ready.get("status") == "True":
        return Cond("DeploymentReady", "True", "Available", f"{kind} {name} is ready")
    waiting = [
        c
        for c in status.get("conditions") or []
        if c.get("type") not in ("Ready", "PresetsCombined") and c.get("status") != "True"
    ]
    detail = "; ".join(f"{c['type']}: {c.get('reason') or c.get('status')}" for c in waiting)
    if ready is not None and not detail:
        detail = ready.get("message") or ready.get("reason") or ""
    return Cond(
        "DeploymentReady", "Unknown", "Progressing", f"{kind} {name}: {detail or 'waiting for KServe'}"
    )


def deployment_condition(
    ctx: SpeculatorContext, isvc: dict[str, Any] | None, pod_failure: Cond | None
) -> Cond:
    """DeploymentReady of a kserve Speculator; `pod_failure` is what the vLLM pods say (crash loops)."""
    status = (isvc or {}).get("status") or {}
    stopped = (find(status.get("conditions"), "Stopped") or {}).get("status") == "True"
    return fold("InferenceService", ctx, isvc, _failure(status) or pod_failure, stopped)
