"""`SpeculatorBenchmark`: one GuideLLM run of a served Speculator against a baseline without speculation.

A run, not a setting: it starts once, ends, and keeps its numbers. Running it again is a new object (the
spec is immutable), so a namespace holds the history of what each draft gained, and the served
Speculator's spec is never touched (GitOps sees no drift).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from speculators_operator.api.base import (
    DNS1035_LABEL,
    K8sModel,
    Quantity,
    cel,
    positive_quantity_rule,
    re2,
    rule,
    secret_name_field,
)
from speculators_operator.api.common import (
    SOURCE_URI_RULE,
    URI_MAX,
    Condition,
    PodMetadata,
    ResourceRequirements,
    SecretRef,
)

PROFILES = ("sweep", "synchronous", "throughput", "constant", "poisson")


class SpeculatorReference(K8sModel):
    name: str = secret_name_field("Name of the Speculator in the same namespace.", kind="Speculator")


class SyntheticData(K8sModel):
    """GuideLLM's synthetic text: prompts and outputs of set lengths (tokens of the verifier's tokenizer)."""

    prompt_tokens: int = Field(default=256, ge=1, le=1_000_000, description="Prompt length in tokens.")
    output_tokens: int = Field(default=128, ge=1, le=1_000_000, description="Output length in tokens.")


class BenchmarkDataset(K8sModel):
    """What GuideLLM sends: synthetic text (the default), a built-in prompt set, or a dataset by URI."""

    __cel__ = (
        rule(
            "(has(self.uri) ? 1 : 0) + (has(self.synthetic) ? 1 : 0) + (has(self.builtin) ? 1 : 0) <= 1",
            "dataset takes one of uri, builtin or synthetic",
        ),
        rule(
            "!has(self.outputTokens) || has(self.builtin)", "dataset.outputTokens applies to builtin prompts"
        ),
        rule(
            "!has(self.uri) || self.uri.startsWith('hf://') || self.uri.startsWith('pvc://')",
            "dataset.uri must be hf://org/dataset (Hub id) or pvc://claim/path (file or directory)",
        ),
        rule("!has(self.secretRef) || has(self.uri)", "dataset.secretRef applies to a dataset uri"),
    )

    synthetic: SyntheticData | None = Field(
        default=None, description="Synthetic prompts (used when uri is not set; 256 in, 128 out)."
    )
    builtin: Literal["chat", "code"] | None = Field(
        default=None,
        description=(
            "A prompt set shipped with the runtime image (32 prompts each): chat (everyday assistant "
            "requests) or code (programming tasks, where drafts are accepted most)."
        ),
    )
    output_tokens: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Output tokens per request of builtin prompts (256)."
    )
    uri: str | None = Field(
        default=None,
        description=(
            "A prompt dataset: hf://org/name (Hub dataset id) or pvc://claim/path/file.jsonl (.json, .csv, "
            ".parquet, .arrow, .txt, or a saved dataset directory), mounted read-only."
        ),
        max_length=URI_MAX,
        json_schema_extra=cel(SOURCE_URI_RULE),
    )
    secret_ref: SecretRef | None = Field(
        default=None, description="Secret with HF_TOKEN for a gated Hub dataset (envFrom)."
    )


class RateSpec(K8sModel):
    """GuideLLM's rate profile."""

    __cel__ = (
        rule(
            "!(self.type in ['constant', 'poisson']) || (has(self.rates) && size(self.rates) > 0)",
            "rate.rates (requests/s) is required for rate.type constant and poisson",
        ),
        rule(
            "self.type in ['constant', 'poisson'] || !has(self.rates) || size(self.rates) == 0",
            "rate.rates applies to rate.type constant or poisson; remove it or change the type",
        ),
    )

    type: Literal["sweep", "synchronous", "throughput", "constant", "poisson"] = Field(
        default="sweep",
        description=(
            "sweep: synchronous, throughput, then sweepSize-2 constant rates between them; synchronous: one "
            "request at a time; throughput: as many as the server takes; constant/poisson: the given rates."
        ),
    )
    rates: list[float] = Field(
        default_factory=list,
        description="Requests per second, one benchmark each (constant, poisson).",
        max_length=30,
        json_schema_extra=cel(rule("self.all(r, r > 0.0)", "rate.rates must all be above 0")),
    )
    sweep_size: int = Field(default=10, ge=3, le=30, description="Benchmarks of a sweep.")


class BaselineSpec(K8sModel):
    """What the speculator is compared with: a temporary copy of it without --speculative-config, or a
    server that already runs."""

    __cel__ = (
        rule(
            "self.create != has(self.url)",
            "baseline needs exactly one of create: true (a temporary baseline) or url (an existing server)",
        ),
    )

    create: bool = Field(
        default=True,
        description=(
            "Stand up <name>-baseline: the Speculator's verifier with the same vLLM arguments and resources, "
            "without a draft; deleted when the benchmark ends."
        ),
    )
    url: str | None = Field(
        default=None,
        description="Base URL of an existing baseline server (create: false), e.g. http://llama-base:8000.",
        max_length=2048,
        json_schema_extra=cel(
            rule(
                "self.startsWith('http://') || self.startsWith('https://')",
                "baseline.url must be an http:// or https:// URL",
            )
        ),
    )


class ResultsClaim(K8sModel):
    """Where GuideLLM's JSON and the report go: a PVC the operator creates (<name>-results), or an existing
    claim (files under <benchmark name>/, so one claim holds a history of runs)."""

    __cel__ = (
        rule(
            "!has(self.claimName) || !has(self.storageClassName)",
            "results.storageClassName applies to a claim the operator creates; remove it or claimName",
        ),
    )

    claim_name: str | None = Field(
        default=None,
        description="Use this existing PVC (kept when the benchmark is deleted).",
        max_length=253,
    )
    size: Quantity = Field(
        default="1Gi",
        description="Size of the created claim.",
        json_schema_extra=cel(positive_quantity_rule("results.size", "1Gi")),
    )
    storage_class_name: str | None = Field(
        default=None, description="StorageClass of the created claim.", max_length=253
    )


class SpeculatorBenchmarkSpec(K8sModel):
    """Desired run: which Speculator, what load, compared with what."""

    __cel__ = (
        rule(
            "self == oldSelf",
            "spec is immutable: a benchmark is one run; create a new SpeculatorBenchmark to run again",
        ),
    )

    speculator_ref: SpeculatorReference = Field(description="The Speculator to measure (same namespace).")
    dataset: BenchmarkDataset = Field(default_factory=BenchmarkDataset, description="Prompts GuideLLM sends.")
    rate: RateSpec = Field(default_factory=RateSpec, description="Rate profile.")
    max_seconds: int = Field(default=60, ge=1, le=86400, description="Duration of each rate.")
    max_requests: int | None = Field(
        default=None, ge=1, description="Also stop a rate after this many requests."
    )
    warmup_seconds: int = Field(
        default=10, ge=0, le=3600, description="Not counted at the start of each rate (batch settling)."
    )
    baseline: BaselineSpec = Field(default_factory=BaselineSpec, description="What to compare with.")
    results: ResultsClaim = Field(default_factory=ResultsClaim, description="Where results are written.")
    tokenizer: str | None = Field(
        default=None,
        description=(
            "Tokenizer for synthetic prompt lengths (hub id or a path in the results claim); default: the "
            "Speculator's verifier when it is hf://, else its served model name."
        ),
        max_length=URI_MAX,
    )
    timeout_seconds: int = Field(
        default=14400,
        ge=60,
        description="The benchmark Job's deadline (activeDeadlineSeconds), both servers together.",
    )
    resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements(requests={"cpu": "2", "memory": "4Gi"}),
        description="Resources of the GuideLLM container (it is CPU-bound: tokenizing, streaming).",
    )
    image: str | None = Field(
        default=None,
        description="Image with `speculators` and GuideLLM (default: the operator's runtime image).",
        max_length=1024,
    )
    pod_metadata: PodMetadata | None = Field(
        default=None, description="Labels and annotations on the benchmark and baseline pods."
    )


class ServerMeasure(K8sModel):
    """One server at one rate (GuideLLM's successful requests)."""

    itl_p50_ms: float | None = Field(default=None, description="Inter-token latency, median (ms).")
    itl_p95_ms: float | None = Field(default=None, description="Inter-token latency, 95th percentile (ms).")
    ttft_p50_ms: float | None = Field(default=None, description="Time to first token, median (ms).")
    ttft_p95_ms: float | None = Field(default=None, description="Time to first token, 95th percentile (ms).")
    output_tokens_per_second: float | None = Field(default=None, description="Output tokens per second.")


class RateResult(K8sModel):
    request_rate: float = Field(
        description="Requests per second offered (achieved for synchronous/throughput)."
    )
    strategy: str = Field(description="GuideLLM strategy of the speculator's benchmark at this rate.")
    speedup: float | None = Field(default=None, description="Baseline ITL p50 over the speculator's.")
    baseline: ServerMeasure = Field(description="The baseline, interpolated at this rate.")
    speculator: ServerMeasure = Field(description="The speculator.")


class BenchmarkAcceptance(K8sModel):
    mean_acceptance_length: float | None = Field(default=None, description="Mean acceptance length.")
    per_position: list[float] = Field(default_factory=list, description="Acceptance rate per draft position.")
    source: str = Field(
        description="benchmark (vLLM's counters over the run) or speculator (its live window at the end)."
    )


class BenchmarkResults(K8sModel):
    uri: str = Field(description="Directory of GuideLLM's JSON reports and the report (pvc://claim/path).")
    report: str | None = Field(default=None, description="The HTML report (pvc://claim/path/report.html).")


class SpeculatorBenchmarkStatus(K8sModel):
    observed_generation: int | None = Field(default=None, description="metadata.generation last reconciled.")
    phase: str | None = Field(
        default=None,
        description="Pending, WaitingForSpeculator, StartingBaseline, Running, Succeeded or Failed.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="SpeculatorReady, BaselineReady, Benchmarked, and Ready (Succeeded).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    speculator_url: str | None = Field(default=None, description="The speculator's URL measured.")
    baseline_url: str | None = Field(default=None, description="The baseline's URL measured.")
    draft: str | None = Field(default=None, description="The draft the Speculator served (status.draft.uri).")
    start_time: str | None = Field(
        default=None, description="When the benchmark Job started.", json_schema_extra={"format": "date-time"}
    )
    completion_time: str | None = Field(
        default=None, description="When it ended.", json_schema_extra={"format": "date-time"}
    )
    speedup_at_lowest_rate: float | None = Field(
        default=None, description="Speed-up (ITL p50 ratio) at the lowest rate measured."
    )
    breakeven_rate: float | None = Field(
        default=None, description="Requests/s above which speculation stops paying (speed-up < 1)."
    )
    breakeven: str | None = Field(
        default=None,
        description=(
            "crossed (breakevenRate interpolated), beyond-measured (faster at every rate), below-lowest "
            "(slower already at the lowest rate) or no-overlap (the two runs share no rate)."
        ),
    )
    rates: list[RateResult] = Field(
        default_factory=list, description="Per rate, both servers.", max_length=30
    )
    acceptance: BenchmarkAcceptance | None = Field(default=None, description="The draft's acceptance.")
    results: BenchmarkResults | None = Field(default=None, description="Where the files are.")


class SpeculatorBenchmark(K8sModel):
    """A GuideLLM benchmark of a Speculator against a baseline: speed-up per request rate, breakeven."""

    __cel__ = (
        rule(
            f"self.metadata.name.size() <= 52 && self.metadata.name.matches({re2(DNS1035_LABEL)})",
            "metadata.name must start with a letter, use lowercase letters, digits and '-', and be at most "
            "52 characters (children append -baseline; Service names are DNS-1035 labels)",
            field_path=".metadata",
        ),
    )

    api_version: str = Field(default="speculators.ai/v1alpha1", description="APIVersion of the object.")
    kind: str = Field(default="SpeculatorBenchmark", description="Kind of the object.")
    metadata: dict = Field(default_factory=dict, description="Standard object metadata.")
    spec: SpeculatorBenchmarkSpec = Field(description="Desired state.")
    status: SpeculatorBenchmarkStatus | None = Field(default=None, description="Observed state.")
