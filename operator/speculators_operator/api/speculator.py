"""`Speculator`: a verifier served by vLLM with a speculative-decoding draft, and its live acceptance."""

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
from speculators_operator.api.common import SOURCE_URI_RULE, URI_MAX, Condition, ModelSource, SecretRef
from speculators_operator.api.serving import ServingSpec
from speculators_operator.api.training import TrainingTemplateSpec


class TrainingRef(K8sModel):
    """A SpeculatorTraining in the same namespace whose output is the draft."""

    name: str = secret_name_field(
        "Name of the SpeculatorTraining in the same namespace.", kind="SpeculatorTraining"
    )


class DraftSource(K8sModel):
    """The draft (speculator) model: a source URI, or the output of a SpeculatorTraining."""

    __cel__ = (
        rule("has(self.uri) != has(self.trainingRef)", "draft needs exactly one of uri or trainingRef"),
        rule(
            "!has(self.trainingRef) || (!has(self.revision) && !has(self.secretRef))",
            "revision and secretRef apply only to a draft uri, not to trainingRef",
        ),
        rule(
            "!has(self.revision) || (has(self.uri) && self.uri.startsWith('hf://'))",
            "revision applies only to hf:// sources",
        ),
    )

    uri: str | None = Field(
        default=None,
        description="Draft (speculators format): hf://org/name, s3://bucket/prefix or pvc://claim/path.",
        max_length=URI_MAX,
        json_schema_extra=cel(SOURCE_URI_RULE),
    )
    revision: str | None = Field(
        default=None, description="Hub revision of the draft; hf:// only.", max_length=255
    )
    secret_ref: SecretRef | None = Field(
        default=None, description="Secret with HF_TOKEN (hf://) or AWS_* keys (s3://), loaded with envFrom."
    )
    training_ref: TrainingRef | None = Field(
        default=None,
        description="Serve this SpeculatorTraining's output; waits until the training succeeds.",
    )


class CaptureClaim(K8sModel):
    """Where captured traffic is kept: a PVC the operator creates (<name>-traffic), or an existing claim."""

    __cel__ = (
        rule(
            "!has(self.claimName) || !has(self.storageClassName)",
            "traffic.capture.pvc.storageClassName applies to a claim the operator creates; remove it or "
            "claimName",
        ),
    )

    claim_name: str | None = Field(
        default=None,
        description="Use this existing PVC (files go to <speculator name>/ inside it).",
        max_length=253,
    )
    size: Quantity = Field(
        default="10Gi",
        description="Size of the created claim (ignored with claimName).",
        json_schema_extra=cel(positive_quantity_rule("traffic.capture.pvc.size", "10Gi")),
    )
    storage_class_name: str | None = Field(
        default=None, description="StorageClass of the created claim.", max_length=253
    )
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce"] = Field(
        default="ReadWriteMany",
        description=(
            "Access mode of the created claim: every vLLM pod writes to it and the retrain's prepare Job "
            "reads it, so ReadWriteMany unless they all share one node."
        ),
    )


class CaptureSpec(K8sModel):
    """A capturing proxy in each vLLM pod keeps sampled chat requests (messages only) as JSONL."""

    enabled: bool = Field(default=False, description="Run the capture proxy in front of vLLM.")
    sample_rate: float = Field(default=0.1, description="Fraction of chat requests kept (0-1).", ge=0, le=1)
    max_records: int = Field(
        default=100000,
        description="Records each pod keeps in finished files; the oldest files go first.",
        ge=1,
        le=100000000,
    )
    records_per_file: int = Field(
        default=1000, description="Records per file before it is finished and renamed.", ge=1, le=1000000
    )
    port: int = Field(
        default=8100,
        description="Container port of the proxy (the Service targets it; vLLM keeps vllm.port).",
        ge=1024,
        le=65535,
    )
    pvc: CaptureClaim = Field(default_factory=CaptureClaim, description="Where the files are kept.")


class TrafficSpec(K8sModel):
    """Live traffic: what is kept of it."""

    capture: CaptureSpec = Field(default_factory=CaptureSpec, description="Traffic capture.")


class DriftSpec(K8sModel):
    """When the served draft has drifted: live acceptance below a bar for a while."""

    __cel__ = (
        rule(
            "has(self.meanAcceptanceLengthBelow) != has(self.dropFraction)",
            "retrain.when needs exactly one of meanAcceptanceLengthBelow (absolute, e.g. 2.2) or "
            "dropFraction (relative to the baseline, e.g. 0.15)",
        ),
    )

    mean_acceptance_length_below: float | None = Field(
        default=None,
        description="Drifted when the live mean acceptance length is below this (tokens per step).",
        ge=1,
        le=17,
    )
    drop_fraction: float | None = Field(
        default=None,
        description=(
            "Drifted when the live mean acceptance length is this fraction below the baseline measured "
            "once the draft was promoted (compared at the same k)."
        ),
        gt=0,
        lt=1,
    )
    for_seconds: int = Field(
        default=600, description="How long it must stay below before a retrain.", ge=0, le=604800
    )
    min_drafts: int = Field(
        default=500,
        description="Drafts the live window needs before it is judged (or taken as the baseline).",
        ge=1,
        le=100000000,
    )


class RetrainSpec(K8sModel):
    """Retrain the draft when live acceptance drifts: a SpeculatorTraining <name>-r<N> from the template."""

    when: DriftSpec = Field(description="What counts as drift.")
    cooldown_seconds: int = Field(
        default=86400,
        description="Seconds after a retrain started before another may start (doubled per failure).",
        ge=60,
        le=31536000,
    )
    template: TrainingTemplateSpec = Field(
        default_factory=TrainingTemplateSpec,
        description=(
            "The retrain's SpeculatorTraining spec, without verifier (the Speculator's). Without data it "
            "trains on the captured traffic, answered again by this Speculator's verifier."
        ),
    )


class CanarySpec(K8sModel):
    """How a retrained draft is tried: a second Deployment behind the same Service (backend kserve: the
    InferenceService's spec.canary, with this share of the pods as its trafficPercent), compared live."""

    __cel__ = (
        rule(
            "self.timeoutSeconds >= self.windowSeconds",
            "canary.timeoutSeconds must be at least canary.windowSeconds",
        ),
    )

    replicas: int = Field(
        default=1,
        description="Canary pods: added to spec.replicas (backend kserve: KServe takes them out of them).",
        ge=1,
        le=1024,
    )
    fraction: float | None = Field(
        default=None,
        description="Instead of replicas: this fraction of spec.replicas, rounded up (e.g. 0.25).",
        gt=0,
        le=1,
    )
    window_seconds: int = Field(
        default=900, description="Seconds the canary serves before it is judged.", ge=10, le=604800
    )
    min_drafts: int = Field(
        default=1000,
        description="Drafts both the canary and the stable pods need in the window, so noise cannot decide.",
        ge=1,
        le=100000000,
    )
    min_gain: float = Field(
        default=0.0,
        description="Promote only if the canary's mean acceptance length beats the stable's by this percent.",
        ge=0,
        le=100,
    )
    timeout_seconds: int = Field(
        default=7200,
        description="Roll back if the canary has not gathered minDrafts by then.",
        ge=10,
        le=604800,
    )


class SpeculatorSpec(ServingSpec):
    """Desired state of a Speculator."""

    __cel__ = (
        *ServingSpec.__cel__,
        rule(
            "!has(self.retrain) || has(self.retrain.template.data) || self.traffic.capture.enabled",
            "retrain trains on retrain.template.data or on the captured traffic: set one of them "
            "(traffic.capture.enabled: true)",
            field_path=".retrain",
        ),
        rule(
            "self.backend != 'llmisvc' || !has(self.retrain)",
            "retrain (drift, canary) is built for backends deployment and kserve, not llmisvc yet",
            field_path=".retrain",
        ),
        rule(
            "self.backend == 'deployment' || !self.traffic.capture.enabled",
            "traffic.capture needs backend deployment (the capturing proxy sits in front of vLLM in the "
            "operator's own pods); with backend kserve, give retrain.template.data instead",
            field_path=".backend",
        ),
        rule(
            "!self.traffic.capture.enabled || self.traffic.capture.port != self.vllm.port",
            "traffic.capture.port must differ from vllm.port (the proxy and vLLM share the pod)",
            field_path=".traffic.capture.port",
        ),
    )

    verifier: ModelSource = Field(description="The verifier (target) model vLLM serves.")
    draft: DraftSource = Field(description="The draft (speculator) model: a source URI or a trainingRef.")
    traffic: TrafficSpec = Field(default_factory=TrafficSpec, description="Live traffic capture.")
    retrain: RetrainSpec | None = Field(
        default=None, description="Retrain the draft on recent traffic when live acceptance drifts."
    )
    canary: CanarySpec = Field(
        default_factory=CanarySpec, description="How a retrained draft is tried before it is promoted."
    )


class DraftStatus(K8sModel):
    """The draft actually deployed."""

    uri: str | None = Field(
        default=None, description="Draft URI (from spec.draft.uri or the training's output)."
    )
    revision: str | None = Field(default=None, description="Hub revision, when set.")
    method: str | None = Field(default=None, description="Speculative method passed to vLLM.")
    num_speculative_tokens: int | None = Field(default=None, description="k passed to vLLM.")
    max_speculative_tokens: int | None = Field(
        default=None,
        description="The most tokens the draft proposes per step (a DFlash block: blockSize - 1).",
    )
    training: str | None = Field(
        default=None, description="The retrain (SpeculatorTraining) whose draft this is, once promoted."
    )
    promoted_at: str | None = Field(
        default=None,
        description="When the canary promoted it.",
        json_schema_extra={"format": "date-time"},
    )


class Acceptance(K8sModel):
    """Speculative-decoding acceptance over the sliding window, summed over ready pods."""

    acceptance_rate: float | None = Field(default=None, description="Accepted / draft tokens (0-1).")
    mean_acceptance_length: float | None = Field(
        default=None, description="1 + accepted tokens / drafts: tokens produced per verifier step."
    )
    per_position: list[float] = Field(
        default_factory=list, description="Acceptance rate of draft position i (accepted at i / drafts)."
    )
    drafts: int = Field(default=0, description="Drafts proposed in the window.")
    draft_tokens: int = Field(default=0, description="Draft tokens proposed in the window.")
    accepted_tokens: int = Field(default=0, description="Draft tokens accepted in the window.")
    window_seconds: int = Field(default=0, description="Length of the window, in seconds.")
    pods: int = Field(default=0, description="Pods that contributed to the window.")
    source: str | None = Field(default=None, description="pods or prometheus.")
    last_scrape_time: str | None = Field(
        default=None,
        description="Time of the scrape that produced these values (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )


class TuningObservation(K8sModel):
    """The last measurement of one k in one load bucket (kept across operator restarts)."""

    bucket: int = Field(default=0, description="Load bucket index (0 without tuning.loadBuckets).")
    k: int = Field(description="k that ran.")
    drafts: int = Field(default=0, description="Drafts in the window (steps, for k 0).")
    per_position: list[float] = Field(default_factory=list, description="Acceptance rate per position.")
    step_seconds: float | None = Field(default=None, description="Mean step time (vLLM inter-token latency).")
    time: str | None = Field(
        default=None, description="When it was measured.", json_schema_extra={"format": "date-time"}
    )


class TuningBucketStatus(K8sModel):
    """k served for one range of running batch sizes."""

    min_batch_size: int = Field(description="Smallest running batch size of the range.")
    max_batch_size: int = Field(description="Largest running batch size of the range.")
    num_speculative_tokens: int = Field(description="k in the range (0: speculation off).")
    expected_speedup: float | None = Field(default=None, description="Expected speed-up at that k.")


class TuningStatus(K8sModel):
    """What automatic k chose, and what it is based on."""

    draft: str | None = Field(
        default=None, description="The draft the tuning is for (reset when it changes)."
    )
    num_speculative_tokens: int | None = Field(
        default=None, description="k chosen (the largest, with buckets)."
    )
    schedule: list[TuningBucketStatus] = Field(
        default_factory=list, description="k per load bucket (num_speculative_tokens_per_batch_size)."
    )
    expected_speedup: float | None = Field(default=None, description="Expected speed-up at the chosen k.")
    cost_ratio: float | None = Field(default=None, description="Draft/verifier step cost ratio in use.")
    cost_ratio_source: str | None = Field(
        default=None, description="measured (step times at several k), evaluation, spec or default."
    )
    last_change_time: str | None = Field(
        default=None, description="When k last changed.", json_schema_extra={"format": "date-time"}
    )
    last_change: str | None = Field(default=None, description="The last change: from, to and expected gain.")
    changes: int = Field(default=0, description="Changes of k so far (each one a rolling update).")
    settling: bool | None = Field(
        default=None,
        description="The last change explored an estimate: the next decision settles on the measured best.",
    )
    observations: list[TuningObservation] = Field(
        default_factory=list, description="Last measurement per (bucket, k)."
    )


class AcceptanceMeasure(K8sModel):
    """Live acceptance at one moment: what drift and the canary are judged on."""

    mean_acceptance_length: float | None = Field(default=None, description="Mean acceptance length.")
    per_position: list[float] = Field(default_factory=list, description="Acceptance rate per position.")
    num_speculative_tokens: int | None = Field(default=None, description="k it was measured at.")
    drafts: int = Field(default=0, description="Drafts in the window.")
    uri: str | None = Field(default=None, description="The draft measured.")
    time: str | None = Field(
        default=None, description="When it was measured.", json_schema_extra={"format": "date-time"}
    )


class RetrainResult(K8sModel):
    """How the last retrain ended."""

    training: str = Field(description="The SpeculatorTraining.")
    result: str = Field(
        description="Promoted, RolledBack, NotPromoted, TrainingFailed, TrainingDeleted or Stopped."
    )
    message: str = Field(default="", description="The numbers behind it.")
    time: str | None = Field(
        default=None, description="When it ended.", json_schema_extra={"format": "date-time"}
    )


class RetrainStatus(K8sModel):
    """The drift -> retrain -> canary loop (spec.retrain)."""

    baseline: AcceptanceMeasure | None = Field(
        default=None, description="Acceptance of the served draft once it was promoted (dropFraction's base)."
    )
    served_uri: str | None = Field(default=None, description="The draft servedSince is about.")
    served_since: str | None = Field(
        default=None,
        description="Since when the stable pods serve status.draft (the baseline waits a window after it).",
        json_schema_extra={"format": "date-time"},
    )
    promoted: DraftStatus | None = Field(
        default=None,
        description="The retrained draft a canary promoted: the stable pods serve it instead of spec.draft.",
    )
    spec_draft: str | None = Field(
        default=None,
        description="The spec.draft the promoted draft replaced: a new spec.draft is served again.",
    )
    replaced: DraftStatus | None = Field(
        default=None, description="spec.draft as it was resolved when the promoted draft replaced it."
    )
    below_since: str | None = Field(
        default=None,
        description="Since when live acceptance is below the bar (retrain.when.forSeconds counts from it).",
        json_schema_extra={"format": "date-time"},
    )
    count: int = Field(default=0, description="Retrains started so far (N of the last <name>-r<N>).")
    active: str | None = Field(default=None, description="The retrain training running now.")
    trigger: AcceptanceMeasure | None = Field(
        default=None, description="The live window that triggered the last retrain."
    )
    threshold: float | None = Field(default=None, description="The bar it was below.")
    last_trigger_time: str | None = Field(
        default=None, description="When the last retrain started.", json_schema_extra={"format": "date-time"}
    )
    consecutive_failures: int = Field(default=0, description="Retrains in a row that failed (backoff).")
    last_result: RetrainResult | None = Field(default=None, description="How the last retrain ended.")


class CanaryStatus(K8sModel):
    """The canary: a retrained draft served by a slice of the fleet, compared with the stable pods."""

    phase: str = Field(description="Starting, Running, Promoting, Promoted or RolledBack.")
    training: str | None = Field(default=None, description="The retrain training whose draft it is.")
    draft: DraftStatus | None = Field(default=None, description="The draft the canary serves.")
    deployment: str | None = Field(default=None, description="The canary Deployment.")
    replicas: int = Field(default=0, description="Canary pods wanted.")
    created_time: str | None = Field(
        default=None,
        description="When the canary was started (timeoutSeconds counts from it).",
        json_schema_extra={"format": "date-time"},
    )
    ready_replicas: int = Field(default=0, description="Canary pods ready.")
    start_time: str | None = Field(
        default=None,
        description="When all canary pods were ready (the window counts from it).",
        json_schema_extra={"format": "date-time"},
    )
    acceptance: AcceptanceMeasure | None = Field(default=None, description="The canary's live acceptance.")
    stable: AcceptanceMeasure | None = Field(
        default=None, description="The stable pods' live acceptance over the same time."
    )
    decision: str | None = Field(default=None, description="Why it was promoted or rolled back.")
    decided_at: str | None = Field(
        default=None, description="When it was decided.", json_schema_extra={"format": "date-time"}
    )


class SpeculatorStatus(K8sModel):
    """Observed state of a Speculator."""

    observed_generation: int | None = Field(default=None, description="metadata.generation last reconciled.")
    phase: str | None = Field(
        default=None,
        description="Pending, WaitingForTraining, ResolvingDraft, Deploying, Running or Failed.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "TrainingReady, DraftResolved, DeploymentReady, MetricsAvailable, Tuned, Drifted, Retraining, "
            "CanaryPromoted, RouteAdmitted and Ready (aggregate of the first three)."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    url: str | None = Field(
        default=None,
        description="URL of the OpenAI-compatible API: the admitted Route's, else KServe's or the Service's.",
    )
    replicas: int | None = Field(default=None, description="Pods of the vLLM Deployment.")
    ready_replicas: int | None = Field(default=None, description="Ready vLLM pods.")
    updated_replicas: int | None = Field(default=None, description="vLLM pods running the current spec.")
    selector: str | None = Field(default=None, description="Label selector of the pods (scale subresource).")
    draft: DraftStatus | None = Field(default=None, description="The draft and settings actually served.")
    acceptance: Acceptance | None = Field(default=None, description="Live acceptance metrics.")
    tuning: TuningStatus | None = Field(default=None, description="Automatic k (spec.tuning.mode auto).")
    retrain: RetrainStatus | None = Field(default=None, description="Drift and retraining (spec.retrain).")
    canary: CanaryStatus | None = Field(default=None, description="The last canary of a retrained draft.")
    previous_drafts: list[DraftStatus] = Field(
        default_factory=list,
        description=(
            "Drafts served before the canary promoted a new one, newest first (at most 5): to roll back, "
            "set spec.draft.uri to one of them."
        ),
        max_length=5,
    )


class Speculator(K8sModel):
    """A verifier served by vLLM with a speculative-decoding draft; acceptance shows in status."""

    __cel__ = (
        rule(
            f"self.metadata.name.size() <= 55 && self.metadata.name.matches({re2(DNS1035_LABEL)})",
            "metadata.name must start with a letter, use lowercase letters, digits and '-', and be at most "
            "55 characters (children append -resolve; Service names are DNS-1035 labels)",
            field_path=".metadata",
        ),
    )

    api_version: str = Field(default="speculators.ai/v1alpha1", description="APIVersion of the object.")
    kind: str = Field(default="Speculator", description="Kind of the object.")
    metadata: dict = Field(default_factory=dict, description="Standard object metadata.")
    spec: SpeculatorSpec = Field(description="Desired state.")
    status: SpeculatorStatus | None = Field(default=None, description="Observed state.")
