"""Children of a Speculator with `backend: llmisvc`: one KServe LLMInferenceService (serving.kserve.io/
v1alpha2, llm-d; what OpenShift AI 3.x serves LLMs with).

KServe (0.20) merges the object over its LLMInferenceServiceConfig presets (strategic merge: containers
by name, volumes by name, mounts by path) and runs the result as Deployment `<name>-kserve`. Its preset's
container `main` runs `bash -c '... eval "exec vllm serve /mnt/models --served-model-name ... --port 8000
... ${VLLM_ADDITIONAL_ARGS} $@"' --`: KServe sets the verifier (spec.model.uri, fetched to /mnt/models by
its storage initializer), the port, the served name and --tensor-parallel-size (spec.parallelism), and the
container's `args` are appended as `$@`. Those args carry `--speculative-config` and the other vLLM
options, each shell-quoted, because the preset passes them through `eval` (unquoted, the JSON's quotes
would be lost). KServe 0.20's API has no field of its own for a speculator (no spec.speculator), so the
draft comes the way it does for the other backends: the `fetch-draft` init container (or a pvc mount).

The pod's labels and annotations (spec.labels/annotations) carry the operator's, so scraping, status and
automatic k find the pods as with a Deployment.
"""

from __future__ import annotations

import shlex
from typing import Any

from speculators_operator import constants as c
from speculators_operator.render import common as r
from speculators_operator.render.kserve import (
    DASHBOARD_LABEL,
    DISPLAY_NAME,
    STOP,
    display_name,
    verifier_storage_uri,
)
from speculators_operator.render.speculator import (
    ResolvedDraft,
    SpeculatorContext,
    pod_selector,
    vllm_argv,
)

API_VERSION = "serving.kserve.io/v1alpha2"
CONTAINER = "main"  # the preset's vLLM container
MODEL_DIR = "/mnt/models"  # where the preset's vllm serve reads the verifier
VLLM_PORT = 8000  # the preset's --port
DRAFT_MOUNT = "/mnt/speculators"  # ours: the preset owns /models (its HF cache)
# Set by KServe from the object (model.name, parallelism) or fixed by its preset: never passed twice.
SET_BY_KSERVE = ("--host", "--port", "--served-model-name", "--tensor-parallel-size")


def _pod_parts(ctx: SpeculatorContext, draft: ResolvedDraft) -> tuple[r.PodParts, str]:
    parts = r.PodParts()
    if verifier_storage_uri(ctx) is None:
        # A verifier with a secretRef: fetched by our init container (a Secret by reference), into the
        # place the preset's vllm serve reads; KServe's storage initializer is switched off.
        mount = {"name": "speculators-verifier", "mountPath": MODEL_DIR}
        parts.add_volume({"name": "speculators-verifier", "emptyDir": {}}, mount)
        ctx.place(parts, ctx.spec.verifier, "verifier", MODEL_DIR, mount)
    mount = {"name": "speculators-models", "mountPath": DRAFT_MOUNT}
    parts.add_volume({"name": "speculators-models", "emptyDir": {}}, mount)
    draft_path = ctx.place(parts, draft.source, "draft", f"{DRAFT_MOUNT}/draft", mount)
    return parts, draft_path


def vllm_args(ctx: SpeculatorContext, draft: ResolvedDraft, draft_path: str) -> list[str]:
    """The container's args: vLLM options after `vllm serve /mnt/models`, shell-quoted for the preset's
    eval, without what KServe sets itself."""
    argv = vllm_argv(ctx, MODEL_DIR, draft_path, draft)[3:]  # after `vllm serve <verifier>`
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in SET_BY_KSERVE:
            skip = True
        else:
            out.append(arg)
    return [shlex.quote(arg) for arg in out]


def llm_inference_service(ctx: SpeculatorContext, draft: ResolvedDraft) -> dict[str, Any]:
    spec = ctx.spec
    parts, draft_path = _pod_parts(ctx, draft)
    labels = r.labels(c.APP_SPECULATOR, "vllm", ctx.deployment_name, c.LABEL_SPECULATOR, ctx.name)
    queue = r.queue_name(spec.scheduling)
    if queue:
        labels[r.QUEUE_LABEL] = queue
    pod_meta = r.pod_template_metadata(
        {**labels, **pod_selector(ctx)},
        spec.pod_metadata,
        {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(VLLM_PORT),
            "prometheus.io/path": "/metrics",
            c.ANNOTATION_DRAFT: draft.source.uri,
        },
    )
    main: dict[str, Any] = {
        "name": CONTAINER,
        "args": vllm_args(ctx, draft, draft_path),
        "resources": r.resources(spec.resources, r.gpu_limits(spec.vllm.tensor_parallel_size)),
        "volumeMounts": parts.mounts,
    }
    if spec.vllm.image:
        main["image"] = spec.vllm.image  # else the preset's llm-d image, the platform's choice
    if spec.vllm.env:
        main["env"] = [e.wire() for e in spec.vllm.env]
    template: dict[str, Any] = {
        "securityContext": r.pod_security_context(spec.security_context),
        "enableServiceLinks": False,
        "containers": [main],
        "volumes": [*r.base_volumes(), *parts.volumes],  # scratch for our init containers
    }
    if parts.init_containers:
        template["initContainers"] = parts.init_containers
    r.apply_scheduling(template, spec.scheduling)
    storage_uri = verifier_storage_uri(ctx)
    body: dict[str, Any] = {
        "model": {"uri": storage_uri or spec.verifier.uri, "name": ctx.served_model_name},
        "replicas": spec.replicas,
        "parallelism": {"tensor": spec.vllm.tensor_parallel_size},
        "labels": pod_meta["labels"],
        "annotations": pod_meta.get("annotations", {}),
        "template": template,
        "router": dict(spec.llmisvc.router),
    }
    if storage_uri is None:
        body["storageInitializer"] = {"enabled": False}
    if spec.llmisvc.base_refs:
        body["baseRefs"] = [{"name": name} for name in spec.llmisvc.base_refs]
    service_labels = r.labels(c.APP_SPECULATOR, "service", ctx.name, c.LABEL_SPECULATOR, ctx.name)
    service_labels[DASHBOARD_LABEL] = "true"
    annotations = {DISPLAY_NAME: display_name(ctx)}
    if spec.replicas == 0:
        annotations[STOP] = "true"
    return {
        "apiVersion": API_VERSION,
        "kind": "LLMInferenceService",
        "metadata": r.child_metadata(ctx.body, ctx.name, service_labels, annotations),
        "spec": body,
    }
