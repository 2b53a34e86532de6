"""Children of a Speculator: the resolve Job, the vLLM Deployment, its Service and the cache PVC."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from speculators_core.serving import build_serve_argv
from speculators_core.sources import parse_source
from speculators_operator import constants as c
from speculators_operator.api.common import ModelSource
from speculators_operator.api.speculator import SpeculatorSpec
from speculators_operator.render import common as r

PROBE_PERIOD_SECONDS = 10
# backend kserve: the predictor Service KServe creates in Standard mode listens on port 80, and a canary
# predictor named "canary" runs as Deployment and Service <isvc>-canary-predictor.
KSERVE_SERVICE_PORT = 80
KSERVE_CANARY = "canary"


@dataclass(frozen=True)
class ResolvedDraft:
    """The draft as it will be served: where it comes from, and method/k after defaulting."""

    source: ModelSource
    method: str
    num_speculative_tokens: int
    # vLLM's num_speculative_tokens_per_batch_size: ((first batch size, last, k), ...), from spec.tuning.
    schedule: tuple[tuple[int, int, int], ...] | None = None
    # The most tokens the draft can propose per step (a DFlash block: block_size - 1), when known: k is
    # never served above it.
    max_speculative_tokens: int | None = None

    def __post_init__(self) -> None:
        limit = self.max_speculative_tokens
        if limit is not None and limit > 0 and self.num_speculative_tokens > limit:
            object.__setattr__(self, "num_speculative_tokens", limit)


class SpeculatorContext(r.ResourceContext[SpeculatorSpec]):
    spec_model = SpeculatorSpec

    def place(
        self, parts: r.PodParts, source: ModelSource, role: str, dest: str, mount: dict[str, Any]
    ) -> str:
        """Make a model available in a serving pod (fetched by `fetch-<role>` into `dest`, or a pvc mounted);
        its local path. One place for the image and pull policy of every backend's init containers."""
        return r.place_source(
            parts,
            source,
            role=role,
            dest=dest,
            image=self.images.runtime,
            pull_policy="IfNotPresent",
            dest_mounts=[mount],
        )

    @property
    def kserve(self) -> bool:
        return self.spec.backend == "kserve"

    @property
    def deployment_name(self) -> str:
        return f"{self.name}-vllm"

    @property
    def llmisvc(self) -> bool:
        return self.spec.backend == "llmisvc"

    @property
    def workload_name(self) -> str:
        """The Deployment whose pods serve: ours (<name>-vllm), KServe's predictor (<name>-predictor), or
        the LLMInferenceService's main workload (<name>-kserve)."""
        if self.llmisvc:
            return f"{self.name}-kserve"
        return f"{self.name}-predictor" if self.kserve else self.deployment_name

    @property
    def canary_name(self) -> str:
        """The canary's Deployment: ours, or the one KServe runs for the InferenceService's canary."""
        return f"{self.name}-{KSERVE_CANARY}-predictor" if self.kserve else f"{self.name}-vllm-canary"

    @property
    def service_name(self) -> str:
        """The Service in front of the pods: ours, KServe's predictor Service, or the LLMInferenceService's
        workload Service."""
        if self.llmisvc:
            return f"{self.name}-kserve-workload-svc"
        return f"{self.name}-predictor" if self.kserve else self.name

    @property
    def service_port(self) -> int:
        if self.llmisvc:
            return self.spec.vllm.port  # the preset's vLLM port (admission keeps it at 8000)
        return KSERVE_SERVICE_PORT if self.kserve else self.spec.service.port

    @property
    def capture_claim(self) -> str | None:
        capture = self.spec.traffic.capture
        if not capture.enabled:
            return None
        return capture.pvc.claim_name or f"{self.name}-traffic"

    @property
    def capture_uri(self) -> str | None:
        """Where the captured traffic lies, as a dataset URI (a directory of JSONL files)."""
        claim = self.capture_claim
        return f"pvc://{claim}/{self.name}" if claim else None

    def canary_replicas(self) -> int:
        canary = self.spec.canary
        if canary.fraction is not None:
            return max(1, math.ceil(canary.fraction * self.spec.replicas))
        return canary.replicas

    @property
    def vllm_image(self) -> str:
        return self.spec.vllm.image or self.images.vllm

    @property
    def cache_claim(self) -> str | None:
        cache = self.spec.cache
        if cache.claim_name:
            return cache.claim_name
        if cache.size is not None:
            return f"{self.name}-cache"
        return None

    @property
    def served_model_name(self) -> str:
        if self.spec.vllm.served_model_name:
            return self.spec.vllm.served_model_name
        verifier = parse_source(self.spec.verifier.uri)
        return verifier.repo_id if verifier.scheme == "hf" and verifier.repo_id else self.name


def _labels(ctx: SpeculatorContext, component: str, instance: str) -> dict[str, str]:
    return r.labels(c.APP_SPECULATOR, component, instance, c.LABEL_SPECULATOR, ctx.name)


def pod_selector(ctx: SpeculatorContext) -> dict[str, str]:
    """Selector of the vLLM pods (immutable in the Deployment, so only stable labels)."""
    return {c.LABEL_INSTANCE: ctx.deployment_name, c.LABEL_SPECULATOR: ctx.name}


def service_selector(ctx: SpeculatorContext) -> dict[str, str]:
    """Every vLLM pod of the Speculator, stable and canary: the canary takes its share of the traffic."""
    return {c.LABEL_SPECULATOR: ctx.name, c.LABEL_COMPONENT: "vllm"}


def selector_string(ctx: SpeculatorContext) -> str:
    return ",".join(f"{k}={v}" for k, v in pod_selector(ctx).items())


def service_url(ctx: SpeculatorContext) -> str:
    """Cluster-domain-independent in-cluster URL (resolves through the pod's DNS search path)."""
    return f"http://{ctx.service_name}.{ctx.namespace}.svc:{ctx.service_port}"


def capture_pvc(ctx: SpeculatorContext) -> dict[str, Any] | None:
    """PVC <name>-traffic for the captured traffic, unless the user named an existing claim."""
    capture = ctx.spec.traffic.capture
    if not capture.enabled or capture.pvc.claim_name:
        return None
    name = f"{ctx.name}-traffic"
    pvc = capture.pvc
    return r.claim(
        ctx.body,
        name,
        _labels(ctx, "traffic", name),
        access_mode=pvc.access_mode,
        size=pvc.size,
        storage_class=pvc.storage_class_name,
    )


def capture_container(ctx: SpeculatorContext) -> dict[str, Any]:
    """The capturing proxy in front of vLLM: the Service's port "http" lands here, then on vLLM."""
    capture = ctx.spec.traffic.capture
    args = [
        "--listen",
        f"0.0.0.0:{capture.port}",
        "--upstream",
        f"http://127.0.0.1:{ctx.spec.vllm.port}",
        "--dir",
        f"{c.CAPTURE_MOUNT}/{ctx.name}",
        "--sample-rate",
        f"{capture.sample_rate:g}",
        "--max-records",
        str(capture.max_records),
        "--records-per-file",
        str(capture.records_per_file),
    ]
    pod_name = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    container = r.cli_container(
        "capture",
        ctx.images.runtime,
        "IfNotPresent",
        "capture-proxy",
        args,
        mounts=[{"name": "traffic", "mountPath": c.CAPTURE_MOUNT}],
        env=[pod_name],
        resource_spec={"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    )
    container["ports"] = [{"name": "http", "containerPort": capture.port, "protocol": "TCP"}]
    container["readinessProbe"] = {
        "httpGet": {"path": "/capture/healthz", "port": "http"},
        "periodSeconds": PROBE_PERIOD_SECONDS,
    }
    return container


def cache_pvc(ctx: SpeculatorContext) -> dict[str, Any] | None:
    cache = ctx.spec.cache
    if cache.claim_name or cache.size is None:
        return None
    name = f"{ctx.name}-cache"
    # A cache shared by several replicas must be mountable on several nodes.
    mode = "ReadWriteMany" if ctx.spec.replicas > 1 else "ReadWriteOnce"
    return r.claim(
        ctx.body,
        name,
        _labels(ctx, "cache", name),
        access_mode=mode,
        size=cache.size,
        storage_class=cache.storage_class_name,
    )


def draft_source(ctx: SpeculatorContext) -> ModelSource | None:
    """spec.draft as a ModelSource when it is a URI (trainingRef drafts come from the training's status)."""
    draft = ctx.spec.draft
    if draft.uri is None:
        return None
    return ModelSource(uri=draft.uri, revision=draft.revision, secret_ref=draft.secret_ref)


def needs_resolve(ctx: SpeculatorContext) -> bool:
    """A URI draft with method or k unset: read them from its config (Job <name>-resolve)."""
    return ctx.spec.draft.uri is not None and (
        ctx.spec.method is None or ctx.spec.num_speculative_tokens is None
    )


def resolve_hash(ctx: SpeculatorContext) -> str:
    draft = ctx.spec.draft
    return r.spec_hash({"uri": draft.uri, "revision": draft.revision})


def _models_volume(ctx: SpeculatorContext) -> dict[str, Any]:
    claim = ctx.cache_claim
    if claim:
        return {"name": "models", "persistentVolumeClaim": {"claimName": claim}}
    return {"name": "models", "emptyDir": {}}


def _pod_spec(
    ctx: SpeculatorContext, parts: r.PodParts, containers: list[dict[str, Any]], *, job: bool
) -> dict:
    spec = ctx.spec
    pod: dict[str, Any] = {
        "securityContext": r.pod_security_context(spec.security_context),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containers": containers,
        "volumes": [*r.base_volumes(), *parts.volumes],
    }
    if job:
        pod["restartPolicy"] = "Never"
    if parts.init_containers:
        pod["initContainers"] = parts.init_containers
    r.apply_scheduling(pod, spec.scheduling)
    return pod


def resolve_job(ctx: SpeculatorContext) -> dict[str, Any]:
    """`speculators inspect --json` on the draft; its JSON lands in the termination message."""
    name = f"{ctx.name}-resolve"
    source = draft_source(ctx)
    assert source is not None
    parts = r.PodParts()
    models = {"name": "models", "mountPath": c.MODELS_MOUNT}
    parts.add_volume({"name": "models", "emptyDir": {}}, models)
    path = ctx.place(parts, source, "draft", f"{c.MODELS_MOUNT}/draft", models)
    # The JSON goes to the termination message, where Kubernetes keeps it after the pod is gone.
    container = r.cli_container(
        "inspect",
        ctx.images.runtime,
        "IfNotPresent",
        "inspect",
        [path, "--json", "--summary-path", c.TERMINATION_LOG],
        mounts=parts.mounts,
        resource_spec={"requests": {"cpu": "100m", "memory": "256Mi"}},
    )
    labels = _labels(ctx, "resolve", name)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": r.child_metadata(
            ctx.body, name, labels, {c.ANNOTATION_SPEC_HASH: resolve_hash(ctx), c.ANNOTATION_STEP: "resolve"}
        ),
        "spec": {
            "backoffLimit": 3,
            "ttlSecondsAfterFinished": c.JOB_TTL_SECONDS,
            "podFailurePolicy": r.job_failure_policy(),
            "template": {
                "metadata": r.pod_template_metadata(labels, ctx.spec.pod_metadata),
                "spec": _pod_spec(ctx, parts, [container], job=True),
            },
        },
    }


def vllm_argv(ctx: SpeculatorContext, verifier_path: str, draft_path: str, draft: ResolvedDraft) -> list[str]:
    """The long form; speculators_core.serving is the one builder of vLLM command lines."""
    v = ctx.spec.vllm
    return build_serve_argv(
        verifier_path,
        draft_path,
        draft.method,
        draft.num_speculative_tokens,
        tensor_parallel_size=v.tensor_parallel_size,
        max_model_len=v.max_model_len,
        gpu_memory_utilization=v.gpu_memory_utilization,
        port=v.port,
        host="0.0.0.0",
        served_model_name=ctx.served_model_name,
        speculative_extra=(
            {"num_speculative_tokens_per_batch_size": [list(entry) for entry in draft.schedule]}
            if draft.schedule
            else None
        ),
        extra_args=list(v.extra_args),
    )


def _probe(path: str, *, failure_threshold: int, port: str = "http") -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": PROBE_PERIOD_SECONDS,
        "timeoutSeconds": 5,
        "failureThreshold": failure_threshold,
    }


def vllm_probes(ctx: SpeculatorContext, startup_path: str = "/health", port: str = "http") -> dict[str, Any]:
    """Probes of the vLLM container (both backends). Loading weights can take many minutes: only the
    startup probe may wait that long (spec.startupTimeoutSeconds)."""
    startup_failures = max(1, math.ceil(ctx.spec.startup_timeout_seconds / PROBE_PERIOD_SECONDS))
    return {
        "startupProbe": _probe(startup_path, failure_threshold=startup_failures, port=port),
        "readinessProbe": _probe("/v1/models", failure_threshold=3, port=port),
        "livenessProbe": _probe("/health", failure_threshold=6, port=port),
    }


def deployment(ctx: SpeculatorContext, draft: ResolvedDraft, *, canary: bool = False) -> dict[str, Any]:
    """The vLLM Deployment: the stable one (spec.replicas), or the canary of a retrained draft."""
    spec = ctx.spec
    name = ctx.canary_name if canary else ctx.deployment_name
    capture = spec.traffic.capture.enabled
    vllm_port = "vllm" if capture else "http"  # with capture, the proxy holds the Service's port
    parts = r.PodParts()
    models = {"name": "models", "mountPath": c.MODELS_MOUNT}
    parts.add_volume(_models_volume(ctx), models)
    verifier_path = ctx.place(parts, spec.verifier, "verifier", f"{c.MODELS_MOUNT}/verifier", models)
    draft_path = ctx.place(parts, draft.source, "draft", f"{c.MODELS_MOUNT}/draft", models)
    argv = vllm_argv(ctx, verifier_path, draft_path, draft)
    env = [*r.scratch_env(), *(e.wire() for e in spec.vllm.env)]
    container: dict[str, Any] = {
        "name": "vllm",
        "image": ctx.vllm_image,
        "imagePullPolicy": "IfNotPresent",
        "command": argv[:1],
        "args": argv[1:],
        "env": env,
        "ports": [{"name": vllm_port, "containerPort": spec.vllm.port, "protocol": "TCP"}],
        "resources": r.resources(spec.resources, r.gpu_limits(spec.vllm.tensor_parallel_size)),
        **vllm_probes(ctx, port=vllm_port),
        "securityContext": r.container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [*r.base_mounts(), *parts.mounts],
    }
    containers = [container]
    if capture:
        containers.append(capture_container(ctx))
        parts.volumes.append({"name": "traffic", "persistentVolumeClaim": {"claimName": ctx.capture_claim}})
    labels = _labels(ctx, "vllm", name)
    if canary:
        labels[c.LABEL_TRACK] = c.TRACK_CANARY
    queue = r.queue_name(spec.scheduling)
    if queue:  # Kueue's Deployment/pod integration admits the pods against the queue's quota
        labels[r.QUEUE_LABEL] = queue
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(spec.vllm.port),
        "prometheus.io/path": "/metrics",
    }
    selector = {c.LABEL_INSTANCE: name, c.LABEL_SPECULATOR: ctx.name}
    # Which draft it serves, readable without parsing the pod template (metadata: no rollout).
    meta_annotations = {c.ANNOTATION_DRAFT: draft.source.uri}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": r.child_metadata(ctx.body, name, labels, meta_annotations),
        "spec": {
            "replicas": ctx.canary_replicas() if canary else spec.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            # Model loading counts against the rollout deadline; give it the startup budget and then some.
            "progressDeadlineSeconds": spec.startup_timeout_seconds + 600,
            "template": {
                "metadata": r.pod_template_metadata(labels, spec.pod_metadata, annotations),
                "spec": _pod_spec(ctx, parts, containers, job=False),
            },
        },
    }


def service(ctx: SpeculatorContext) -> dict[str, Any]:
    svc = ctx.spec.service
    metadata = r.child_metadata(ctx.body, ctx.name, _labels(ctx, "service", ctx.name), svc.annotations)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": svc.type,
            "selector": service_selector(ctx),
            "ports": [{"name": "http", "port": svc.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
