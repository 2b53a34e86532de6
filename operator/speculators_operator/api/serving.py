"""What serving a verifier with a draft takes, besides the two models: shared by `Speculator.spec` and
`SpeculatorTraining.spec.deploy`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from annotated_types import Ge, Le, MaxLen
from pydantic import Field

from speculators_operator.api import vllm_args
from speculators_operator.api.base import (
    DNS1123_SUBDOMAIN,
    FreeForm,
    K8sModel,
    Quantity,
    cel,
    positive_quantity_rule,
    re2,
    rule,
)
from speculators_operator.api.common import (
    EnvVar,
    PodMetadata,
    PodSecurityOverrides,
    ResourceRequirements,
    Scheduling,
)

Method = Literal["eagle3", "eagle", "peagle", "dflash", "dspark"]


class VllmSpec(K8sModel):
    """How vLLM runs: `vllm serve <verifier> --speculative-config '{...}'` plus these settings."""

    image: str | None = Field(
        default=None,
        description="vLLM image (default: the operator's pinned vllm/vllm-openai).",
        max_length=512,
    )
    extra_args: list[Annotated[str, MaxLen(512)]] = Field(
        default_factory=list,
        description='Extra `vllm serve` arguments after the rendered ones, e.g. ["--enable-prefix-caching"].',
        max_length=64,
        json_schema_extra={"x-kubernetes-validations": vllm_args.cel_rules()},
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        description=(
            "Extra environment variables of the vLLM container, a list as in a Pod: "
            "[{name: VLLM_LOGGING_LEVEL, value: DEBUG}, "
            "{name: HF_TOKEN, valueFrom: {secretKeyRef: {name: hf, key: token}}}]."
        ),
        max_length=64,
    )
    tensor_parallel_size: int = Field(
        default=1,
        description="GPUs per replica for tensor parallelism (--tensor-parallel-size).",
        ge=1,
        le=64,
    )
    max_model_len: int | None = Field(
        default=None, description="Maximum context length (--max-model-len).", ge=1, le=16777216
    )
    gpu_memory_utilization: float | None = Field(
        default=None,
        description="Fraction of GPU memory vLLM may use (--gpu-memory-utilization).",
        gt=0,
        le=1,
    )
    port: int = Field(
        default=8000, description="Container port of the OpenAI API and /metrics.", ge=1024, le=65535
    )
    served_model_name: str | None = Field(
        default=None,
        description="Model name clients send (default: the verifier's hub id, else the Speculator's name).",
        max_length=256,
    )


class ServiceSpec(K8sModel):
    """The Service in front of the vLLM pods."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Service type."
    )
    port: int = Field(default=8000, description="Service port.", ge=1, le=65535)
    annotations: dict[str, str] | None = Field(default=None, description="Annotations of the Service.")


class CacheSpec(K8sModel):
    """Where the init container downloads verifier and draft (/models). Default: an emptyDir per pod."""

    __cel__ = (
        rule(
            "!has(self.claimName) || (!has(self.size) && !has(self.storageClassName))",
            "size and storageClassName apply to a cache claim the operator creates; remove them or claimName",
        ),
    )

    size: Quantity | None = Field(
        default=None,
        description="Create PVC <name>-cache of this size (ReadWriteMany when replicas > 1).",
        json_schema_extra=cel(positive_quantity_rule("cache.size", "200Gi")),
    )
    claim_name: str | None = Field(
        default=None, description="Use this existing PVC as the model cache.", max_length=253
    )
    storage_class_name: str | None = Field(
        default=None, description="StorageClass of the created cache claim.", max_length=253
    )


class MetricsSpec(K8sModel):
    """Live acceptance metrics, scraped from vLLM's /metrics or read from Prometheus."""

    __cel__ = (
        rule(
            "self.source != 'prometheus' || has(self.prometheusUrl)",
            "metrics.source prometheus needs metrics.prometheusUrl",
        ),
        rule(
            "self.windowSeconds >= self.intervalSeconds",
            "metrics.windowSeconds must be at least metrics.intervalSeconds",
        ),
    )

    enabled: bool = Field(default=True, description="Scrape acceptance metrics into status.acceptance.")
    interval_seconds: int = Field(default=30, description="Seconds between scrapes.", ge=2, le=3600)
    window_seconds: int = Field(
        default=300, description="Sliding window the acceptance numbers cover, in seconds.", ge=2, le=86400
    )
    source: Literal["pods", "prometheus"] = Field(
        default="pods",
        description="pods: scrape each ready vLLM pod; prometheus: query prometheusUrl (large fleets).",
    )
    prometheus_url: str | None = Field(
        default=None,
        description="Prometheus base URL, e.g. http://prometheus-operated.monitoring:9090.",
        max_length=1024,
        json_schema_extra=cel(rule("self.matches(r'^https?://.+')", "prometheusUrl must be an http(s) URL")),
    )


class RouteSpec(K8sModel):
    """An OpenShift Route to the Speculator (edge TLS); only on clusters that serve route.openshift.io."""

    enabled: bool = Field(
        default=False, description="Create Route <name>; status.url becomes its admitted host."
    )
    host: str | None = Field(
        default=None,
        description="Host of the Route (default: the router's generated host; needs routes/custom-host).",
        max_length=253,
        json_schema_extra=cel(
            rule(
                f"self.matches({re2(DNS1123_SUBDOMAIN)})",
                "host must be a DNS name (lowercase DNS-1123 subdomain)",
            )
        ),
    )


class TuningSpec(K8sModel):
    """Automatic k: the operator picks numSpeculativeTokens from live acceptance and step times."""

    __cel__ = (
        rule("self.min <= self.max", "tuning.min must not exceed tuning.max"),
        rule(
            "!has(self.loadBuckets) || self.loadBuckets.isSorted()",
            "tuning.loadBuckets must be ascending batch sizes, e.g. [4, 16, 64]",
        ),
    )

    mode: Literal["fixed", "auto"] = Field(
        default="fixed",
        description=(
            "fixed: serve numSpeculativeTokens (or the draft's k); auto: choose k from the live per-position "
            "acceptance and vLLM's step times, starting from numSpeculativeTokens, the training's evaluation "
            "or the draft's config. The chosen k is in status.draft.numSpeculativeTokens; spec is never "
            "written."
        ),
    )
    min: int = Field(default=1, description="Smallest k auto may choose.", ge=1, le=16)
    max: int = Field(default=8, description="Largest k auto may choose.", ge=1, le=16)
    min_gain: float = Field(
        default=5.0,
        description="Change k only for at least this expected gain in tokens/s, in percent (hysteresis).",
        ge=0,
        le=100,
    )
    cooldown_seconds: int = Field(
        default=600,
        description="Seconds after a change before k may change again (each change rolls the pods).",
        ge=10,
        le=604800,
    )
    min_drafts: int = Field(
        default=500,
        description="Drafts the window must hold at the served k before k is judged.",
        ge=1,
        le=100000000,
    )
    load_buckets: list[Annotated[int, Ge(1), Le(65536)]] = Field(
        default_factory=list,
        description=(
            "Upper ends of running-batch-size buckets, e.g. [4, 16, 64] for 1-4, 5-16, 17-64 and 65+. With "
            "mode auto a k is chosen per bucket (0 turns speculation off where it does not pay) and served "
            "as vLLM's num_speculative_tokens_per_batch_size."
        ),
        max_length=8,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    draft_cost_ratio: float | None = Field(
        default=None,
        description=(
            "Cost of a draft pass relative to a verifier step, before step times at two k have measured it "
            "(default: the training's evaluation, else 0.05)."
        ),
        gt=0,
        le=2,
    )


def _llm_d_router() -> dict[str, Any]:
    return {"route": {}, "gateway": {}, "scheduler": {}}


class LLMInferenceServiceSpec(K8sModel):
    """backend llmisvc: the parts of the LLMInferenceService that KServe (llm-d) owns, passed through."""

    router: FreeForm = Field(
        default_factory=_llm_d_router,
        description=(
            "The LLMInferenceService's spec.router, as is (default: llm-d's managed HTTPRoute, Gateway and "
            "inference scheduler; {} for none: clients use the <name>-kserve-workload-svc Service)."
        ),
    )
    base_refs: list[str] | None = Field(
        default=None,
        description="LLMInferenceServiceConfig names merged under it (spec.baseRefs; default: KServe's).",
        max_length=16,
        json_schema_extra={"items": {"type": "string", "maxLength": 253}},
    )


class ServingSpec(K8sModel):
    """Everything about serving but the verifier and draft (shared with SpeculatorTraining.spec.deploy)."""

    __cel__ = (
        rule(
            "!has(self.numSpeculativeTokens) || !has(self.tuning) || self.tuning.mode != 'auto' || "
            "(self.numSpeculativeTokens >= self.tuning.min && self.numSpeculativeTokens <= self.tuning.max)",
            "with tuning.mode auto, numSpeculativeTokens is the k to start from and must lie within "
            "tuning.min..tuning.max",
            field_path=".numSpeculativeTokens",
        ),
        rule(
            "self.backend != 'llmisvc' || self.vllm.port == 8000",
            "backend llmisvc: KServe's LLMInferenceService template serves vLLM on port 8000; leave "
            "vllm.port at 8000",
            field_path=".vllm.port",
        ),
        rule(
            "self.backend != 'llmisvc' || !self.route.enabled",
            "backend llmisvc is exposed by its own router (llmisvc.router: HTTPRoute and Gateway), not by "
            "an OpenShift Route; set route.enabled false",
            field_path=".route.enabled",
        ),
        rule(
            "self.backend != 'llmisvc' || (!has(self.cache.size) && !has(self.cache.claimName))",
            "backend llmisvc: KServe's template owns the model cache at /models; remove cache",
            field_path=".cache",
        ),
    )

    method: Method | None = Field(
        default=None,
        description="Speculative method passed to vLLM (default: read from the draft's config).",
    )
    num_speculative_tokens: int | None = Field(
        default=None,
        description=(
            "Draft tokens proposed per step, k (default: read from the draft's config); with tuning.mode "
            "auto, the k to start from."
        ),
        ge=1,
        le=16,
    )
    tuning: TuningSpec = Field(default_factory=TuningSpec, description="Automatic choice of k.")
    backend: Literal["deployment", "kserve", "llmisvc"] = Field(
        default="deployment",
        description=(
            "deployment: a Deployment + Service; kserve: a KServe ServingRuntime + InferenceService "
            "(deployment mode Standard; listed in the OpenShift AI dashboard); llmisvc: a KServe "
            "LLMInferenceService (llm-d; OpenShift AI 3.x)."
        ),
    )
    llmisvc: LLMInferenceServiceSpec = Field(
        default_factory=LLMInferenceServiceSpec, description="The LLMInferenceService (backend llmisvc)."
    )
    vllm: VllmSpec = Field(default_factory=VllmSpec, description="vLLM settings.")
    replicas: int = Field(
        default=1, description="Number of vLLM replicas (scale subresource).", ge=0, le=1024
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description="vLLM container resources (default: nvidia.com/gpu limit = vllm.tensorParallelSize).",
    )
    scheduling: Scheduling | None = Field(
        default=None, description="Node selection and priority of the pods."
    )
    service: ServiceSpec = Field(
        default_factory=ServiceSpec, description="The Service in front of vLLM (backend deployment)."
    )
    route: RouteSpec = Field(
        default_factory=RouteSpec, description="An OpenShift Route (route.openshift.io)."
    )
    cache: CacheSpec = Field(default_factory=CacheSpec, description="Model cache volume mounted at /models.")
    metrics: MetricsSpec = Field(default_factory=MetricsSpec, description="Acceptance metrics in status.")
    startup_timeout_seconds: int = Field(
        default=1800,
        description="How long vLLM may take to load the models before the startup probe restarts it.",
        ge=60,
        le=86400,
    )
    pod_metadata: PodMetadata | None = Field(default=None, description="Labels and annotations for the pods.")
    security_context: PodSecurityOverrides | None = Field(
        default=None, description="Fixed UID/GID, only for root-based images on vanilla clusters."
    )
