"""Children of a Speculator with `backend: kserve`: a KServe ServingRuntime and InferenceService.

OpenShift AI lists only KServe InferenceServices (labelled opendatahub.io/dashboard=true) in its dashboard,
so this backend replaces the Deployment and Service with:

- ServingRuntime `<name>-vllm`: the vLLM container with the whole `vllm serve <verifier>
  --speculative-config '{...}'` command line (one runtime per Speculator: the draft is part of it),
  restricted securityContext, writable caches under /scratch, a memory-backed /dev/shm, startup and
  readiness probes on /v1/models;
- InferenceService `<name>` in deployment mode Standard (a plain Deployment, no Knative): the predictor
  names the runtime and the model format vLLM, its `storageUri` is the verifier (KServe's storage
  initializer downloads or mounts it at /mnt/models, so the dashboard shows where the model comes from),
  and the pod-level parts: security context, scheduling, the model cache, and the draft.

The draft is not a second storage URI: KServe's `storageUris` needs KServe >= 0.16 (and Knative's
init-container flag in Serverless mode), which OpenShift AI releases do not all ship. It is fetched by the
same `speculators fetch` init container as with the Deployment backend (or mounted, for pvc://). A
verifier with a secretRef is fetched that way too: KServe's storage initializer takes credentials only from
the ServiceAccount's secrets, and this operator passes a Secret to pods by reference (envFrom) only.
"""

from __future__ import annotations

import json
from typing import Any

from speculators_core.sources import parse_source
from speculators_operator import constants as c
from speculators_operator.render import common as r
from speculators_operator.render.speculator import (
    KSERVE_CANARY,
    ResolvedDraft,
    SpeculatorContext,
    pod_selector,
    vllm_argv,
    vllm_probes,
)

ISVC_API_VERSION = "serving.kserve.io/v1beta1"
RUNTIME_API_VERSION = "serving.kserve.io/v1alpha1"
MODEL_FORMAT = "vLLM"
# Where KServe's storage initializer puts (or mounts) predictor.model.storageUri.
KSERVE_MODEL_DIR = "/mnt/models"
# KServe's own container name: it merges the predictor's model container into the runtime's by this name.
CONTAINER = "kserve-container"
SPECULATIVE_FLAG = "--speculative-config"

DASHBOARD_LABEL = "opendatahub.io/dashboard"
DISPLAY_NAME = "openshift.io/display-name"
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
STOP = "serving.kserve.io/stop"


def runtime_name(ctx: SpeculatorContext) -> str:
    return f"{ctx.name}-vllm"


def display_name(ctx: SpeculatorContext) -> str:
    """The dashboard's name: the Speculator's own openshift.io/display-name annotation, else its name."""
    annotations = ctx.body["metadata"].get("annotations") or {}
    return annotations.get(DISPLAY_NAME) or ctx.name


def _labels(ctx: SpeculatorContext, component: str, instance: str) -> dict[str, str]:
    labels = r.labels(c.APP_SPECULATOR, component, instance, c.LABEL_SPECULATOR, ctx.name)
    labels[DASHBOARD_LABEL] = "true"
    return labels


def verifier_storage_uri(ctx: SpeculatorContext) -> str | None:
    """The verifier as KServe storage URI, or None when our init container must fetch it (secretRef)."""
    verifier = ctx.spec.verifier
    if verifier.secret_ref is not None:
        return None
    source = parse_source(verifier.uri)
    if source.scheme == "hf" and verifier.revision:
        return f"{verifier.uri}:{verifier.revision}"  # KServe's hf://org/name:revision form
    return verifier.uri


def _pod_parts(ctx: SpeculatorContext, draft: ResolvedDraft) -> tuple[r.PodParts, str, str]:
    """Volumes, mounts and init containers for verifier and draft; (parts, verifier path, draft path)."""
    parts = r.PodParts()
    models = {"name": "models", "mountPath": c.MODELS_MOUNT}
    claim = ctx.cache_claim
    volume = (
        {"name": "models", "persistentVolumeClaim": {"claimName": claim}}
        if claim
        else {"name": "models", "emptyDir": {}}
    )
    parts.add_volume(volume, models)
    if verifier_storage_uri(ctx) is None:
        verifier_path = ctx.place(parts, ctx.spec.verifier, "verifier", f"{c.MODELS_MOUNT}/verifier", models)
    else:
        verifier_path = KSERVE_MODEL_DIR
    draft_path = ctx.place(parts, draft.source, "draft", f"{c.MODELS_MOUNT}/draft", models)
    return parts, verifier_path, draft_path


def _argv(
    ctx: SpeculatorContext, draft: ResolvedDraft, verifier_path: str, draft_path: str
) -> tuple[list[str], list[str]]:
    """vLLM's command line split in two: the runtime's part (everything but the draft), and the
    predictor's `--speculative-config` (KServe appends a predictor's model args to the runtime's)."""
    argv = vllm_argv(ctx, verifier_path, draft_path, draft)
    at = argv.index(SPECULATIVE_FLAG)
    return [*argv[:at], *argv[at + 2 :]], argv[at : at + 2]


def serving_runtime(ctx: SpeculatorContext, draft: ResolvedDraft) -> dict[str, Any]:
    """The vLLM container without the draft: each predictor (stable, canary) brings its own draft's mounts
    and --speculative-config, so one runtime serves both."""
    spec = ctx.spec
    _, verifier_path, draft_path = _pod_parts(ctx, draft)
    argv, _ = _argv(ctx, draft, verifier_path, draft_path)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": ctx.vllm_image,
        "imagePullPolicy": "IfNotPresent",
        "command": argv[:1],
        "args": argv[1:],
        "env": [*r.scratch_env(), *(e.wire() for e in spec.vllm.env)],
        "ports": [{"name": "http", "containerPort": spec.vllm.port, "protocol": "TCP"}],
        **vllm_probes(ctx, startup_path="/v1/models"),
        "securityContext": r.container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": r.base_mounts(),
    }
    name = runtime_name(ctx)
    annotations = {
        DISPLAY_NAME: f"vLLM with speculative decoding ({display_name(ctx)})",
        "opendatahub.io/recommended-accelerators": '["nvidia.com/gpu"]',
        "opendatahub.io/apiProtocol": "REST",
    }
    return {
        "apiVersion": RUNTIME_API_VERSION,
        "kind": "ServingRuntime",
        "metadata": r.child_metadata(ctx.body, name, _labels(ctx, "vllm", name), annotations),
        "spec": {
            "supportedModelFormats": [{"name": MODEL_FORMAT, "autoSelect": False}],
            "multiModel": False,
            "annotations": {
                "prometheus.kserve.io/port": str(spec.vllm.port),
                "prometheus.kserve.io/path": "/metrics",
            },
            "containers": [container],
            "volumes": r.base_volumes(),
        },
    }


def _speculative_key(draft: ResolvedDraft) -> str:
    plan: Any = [list(e) for e in draft.schedule] if draft.schedule else draft.num_speculative_tokens
    return f"{draft.method}/{json.dumps(plan, separators=(',', ':'))}"


def canary_traffic_percent(ctx: SpeculatorContext) -> int:
    """The canary's share of the traffic: its share of the pods, as KServe runs them (it scales the stable
    predictor down by the ready canary replicas, to no fewer than 1)."""
    canary = ctx.canary_replicas()
    stable = max(ctx.spec.replicas - canary, 1)
    return max(1, min(99, round(100 * canary / (stable + canary))))


def _predictor(ctx: SpeculatorContext, draft: ResolvedDraft, *, canary: bool) -> dict[str, Any]:
    """The pod-level part of a predictor: the stable one, or the canary serving a retrained draft."""
    spec = ctx.spec
    parts, verifier_path, draft_path = _pod_parts(ctx, draft)
    instance = ctx.canary_name if canary else ctx.deployment_name
    pod_labels = {**_labels(ctx, "vllm", instance), **pod_selector(ctx), c.LABEL_INSTANCE: instance}
    pod_labels.pop(DASHBOARD_LABEL)
    if canary:
        pod_labels[c.LABEL_TRACK] = c.TRACK_CANARY
    queue = r.queue_name(spec.scheduling)
    if queue:
        pod_labels[r.QUEUE_LABEL] = queue
    template_meta = r.pod_template_metadata(
        pod_labels,
        spec.pod_metadata,
        {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(spec.vllm.port),
            "prometheus.io/path": "/metrics",
            # What the pods draft (method and k or schedule), readable without parsing the args.
            c.ANNOTATION_SPECULATIVE: _speculative_key(draft),
            # Which draft they serve, readable on KServe's Deployment (the loop waits for it).
            c.ANNOTATION_DRAFT: draft.source.uri,
        },
    )
    model: dict[str, Any] = {
        "modelFormat": {"name": MODEL_FORMAT},
        "runtime": runtime_name(ctx),
        "resources": r.resources(spec.resources, r.gpu_limits(spec.vllm.tensor_parallel_size)),
        # KServe merges these into the runtime's container: mounts by path, args appended.
        "args": _argv(ctx, draft, verifier_path, draft_path)[1],
        "volumeMounts": parts.mounts,
    }
    storage_uri = verifier_storage_uri(ctx)
    if storage_uri:
        model["storageUri"] = storage_uri
    predictor: dict[str, Any] = {
        "labels": template_meta["labels"],
        "annotations": template_meta.get("annotations", {}),
        "securityContext": r.pod_security_context(spec.security_context),
        "enableServiceLinks": False,
        "volumes": parts.volumes,
        "model": model,
    }
    if parts.init_containers:
        predictor["initContainers"] = parts.init_containers
    r.apply_scheduling(predictor, spec.scheduling)
    if canary:
        # KServe lays the canary's predictor over the stable one; its replicas are fixed (no maxReplicas).
        # The CRD's canary model is a full container: it needs its name (KServe's own container name).
        predictor["model"] = {"name": CONTAINER, **model}
        return {"name": KSERVE_CANARY, "minReplicas": ctx.canary_replicas(), **predictor}
    replicas = max(spec.replicas, 1)
    return {
        "minReplicas": replicas,
        "maxReplicas": replicas,
        # Standard (raw Deployment) mode: never below the ready replicas while a new k rolls out.
        "deploymentStrategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        **predictor,
    }


def inference_service(
    ctx: SpeculatorContext, draft: ResolvedDraft, canary: ResolvedDraft | None = None
) -> dict[str, Any]:
    """The InferenceService; with `canary`, KServe's own canary (spec.canary, KServe >= 0.20) serves that
    draft on its own Deployment and takes canary_traffic_percent of the traffic through the gateway."""
    spec = ctx.spec
    annotations = {
        DEPLOYMENT_MODE: "Standard",
        DISPLAY_NAME: display_name(ctx),
        # spec.replicas is the only scaling knob (the scale subresource); no HPA fights it.
        AUTOSCALER_CLASS: "none",
    }
    if spec.replicas == 0:
        annotations[STOP] = "true"  # KServe's way to run no pods (reported as the Stopped condition)
    isvc_spec: dict[str, Any] = {"predictor": _predictor(ctx, draft, canary=False)}
    if canary is not None:
        isvc_spec["canary"] = [
            {"predictor": _predictor(ctx, canary, canary=True), "trafficPercent": canary_traffic_percent(ctx)}
        ]
        # Written with spec.canary in one apply: an InferenceService that has this but no spec.canary is
        # one whose CRD pruned the field (KServe < 0.20).
        annotations[c.ANNOTATION_CANARY] = canary.source.uri
    return {
        "apiVersion": ISVC_API_VERSION,
        "kind": "InferenceService",
        "metadata": r.child_metadata(ctx.body, ctx.name, _labels(ctx, "service", ctx.name), annotations),
        "spec": isvc_spec,
    }


def canary_pruned(isvc: dict[str, Any] | None) -> bool:
    """We applied a canary and the API server dropped it: this KServe has no spec.canary."""
    if isvc is None:
        return False
    annotations = isvc["metadata"].get("annotations") or {}
    return bool(annotations.get(c.ANNOTATION_CANARY)) and not (isvc.get("spec") or {}).get("canary")
