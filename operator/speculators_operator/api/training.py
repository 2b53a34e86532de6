"""`SpeculatorTraining`: data preparation, hidden-state generation, training and evaluation as GPU Jobs."""

from __future__ import annotations

from typing import Annotated, Literal

from annotated_types import Ge, Le
from pydantic import Field

from speculators_operator.api.base import (
    DNS1035_LABEL,
    DNS1123_SUBDOMAIN,
    K8sModel,
    Quantity,
    cel,
    positive_quantity_rule,
    re2,
    rule,
)
from speculators_operator.api.common import (
    DATASET_URI_RULE,
    URI_MAX,
    Condition,
    LocalObjectReference,
    ModelSource,
    PodMetadata,
    ResourceRequirements,
    Scheduling,
    SecretRef,
)
from speculators_operator.api.serving import ServingSpec

S3_PREFIX_RULE = rule(
    "self.matches(r'^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$')", "must be s3://bucket/prefix"
)
HUB_REPO_RULE = rule(
    "self.matches(r'^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$')",
    "must be a Hugging Face repo id org/name",
)


class Dataset(K8sModel):
    """One training dataset."""

    uri: str = Field(
        description=(
            "hf://org/name[?config=name] (Hub dataset), s3://bucket/prefix or pvc://claim/path "
            "(.json/.jsonl file or a datasets save_to_disk directory)."
        ),
        max_length=URI_MAX,
        json_schema_extra=cel(DATASET_URI_RULE),
    )
    split: str | None = Field(
        default=None, description="Dataset split for hf:// datasets, e.g. train.", max_length=128
    )
    secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret with HF_TOKEN (gated hf://) or AWS_* keys (s3://), loaded with envFrom.",
    )


class DataSpec(K8sModel):
    """How the training data is prepared (speculators prepare-data)."""

    __cel__ = (
        rule(
            "!has(self.regenerateEndpoint) || self.regenerateResponses",
            "data.regenerateEndpoint needs data.regenerateResponses: true",
        ),
    )

    datasets: list[Dataset] = Field(description="Conversations to train on.", min_length=1, max_length=32)
    max_samples: int | None = Field(
        default=None, description="Use at most this many samples.", ge=1, le=1000000000
    )
    max_length: int = Field(default=2048, description="Maximum tokens per sample.", ge=16, le=1048576)
    regenerate_responses: bool = Field(
        default=False,
        description="Regenerate assistant turns with the verifier, so the draft learns its outputs.",
    )
    regenerate_endpoint: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint serving the verifier for regeneration.",
        max_length=1024,
        json_schema_extra=cel(
            rule("self.matches(r'^https?://.+')", "regenerateEndpoint must be an http(s) URL")
        ),
    )
    reasoning: Literal["keep", "strip"] = Field(
        default="keep", description="Keep or strip reasoning (<think>) text."
    )
    holdout_fraction: float = Field(
        default=0.05, description="Fraction of samples held out for evaluation.", ge=0, le=0.5
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Resources of the prepare Job (default: 4 CPUs, 16Gi memory)."
    )


class DatagenSpec(K8sModel):
    """Hidden-state generation (offline training only): an Indexed Job, one pod per shard."""

    shards: int = Field(default=1, description="Number of shards, i.e. parallel datagen pods.", ge=1, le=1024)
    layer_ids: list[Annotated[int, Ge(0), Le(1023)]] | None = Field(
        default=None,
        description="Verifier layers whose hidden states feed the draft (default: [2, n/2, n-3]).",
        min_length=1,
        max_length=16,
    )
    dtype: Literal["bfloat16", "float8"] = Field(default="bfloat16", description="Stored hidden-state dtype.")
    resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements(limits={"nvidia.com/gpu": 1}),
        description="Resources of each datagen pod.",
    )


class DFlashParams(K8sModel):
    """DFlash training (algorithm dflash), upstream speculators 0.9.0's recipe as defaults."""

    block_size: int = Field(
        default=16, description="Tokens per block; a block drafts blockSize - 1 of them.", ge=2, le=64
    )
    mask_token_id: int | None = Field(
        default=None,
        description="The MASK token id (default: the verifier vocabulary's last id, a reserved token).",
        ge=0,
    )
    max_anchors: int = Field(default=512, description="Blocks per packed training row.", ge=1, le=65536)
    loss_weighting: Literal["dpace", "fixed-exp-decay"] = Field(
        default="dpace",
        description="Per-position weight of the CE loss: D-PACE, or exp(-(j-1)/decayGamma).",
    )
    decay_gamma: float = Field(default=4.0, description="fixed-exp-decay's gamma.", gt=0, le=1000)
    dpace_alpha: float = Field(default=0.5, description="D-PACE's smoothing constant.", gt=0, le=1)


class TrainingParams(K8sModel):
    """The draft model and its training run (speculators train)."""

    __cel__ = (
        rule(
            "!self.fsdp || self.nodes * self.gpusPerNode > 1",
            "training.fsdp needs more than one GPU (nodes x gpusPerNode > 1)",
        ),
    )

    mode: Literal["offline", "online"] = Field(
        default="offline",
        description="offline: hidden states precomputed by datagen; online: computed while training.",
    )
    epochs: int = Field(default=20, description="Training epochs.", ge=1, le=10000)
    learning_rate: float = Field(default=1e-4, description="Peak learning rate.", gt=0, le=1)
    scheduler: Literal["cosine", "linear"] = Field(default="cosine", description="Learning-rate schedule.")
    warmup_steps: int = Field(default=0, description="Linear warm-up steps.", ge=0, le=100000000)
    ttt_steps: int = Field(
        default=3, description="Train-time-test depth (draft steps unrolled in training).", ge=1, le=16
    )
    loss: Literal["kl", "ce", "lk"] = Field(
        default="kl",
        description="kl: distil the verifier's distribution; ce: its tokens; lk: KL blended into the "
        "acceptance rate as it grows (hybrid LK loss).",
    )
    step_weighting: Literal["acceptance", "uniform"] = Field(
        default="acceptance",
        description=(
            "eagle3/eagle: acceptance weighs a draft start's loss at TTT step s by the draft's own "
            "probability that its steps before s are accepted (verification only reads step s then); "
            "uniform weighs every step alike (upstream speculators' recipe)."
        ),
    )
    train_lm_head: bool | None = Field(
        default=None,
        description=(
            "Train the draft's lm_head (default: true for eagle3, whose format stores it, as EAGLE-3's own "
            "recipe; false keeps the verifier's rows, upstream speculators' recipe). algorithm eagle "
            "borrows the verifier's lm_head and cannot train one."
        ),
    )
    draft_vocab_size: int | None = Field(
        default=None,
        description="Draft vocabulary size (most frequent tokens; default: the verifier's).",
        ge=1,
        le=4194304,
    )
    num_layers: int | None = Field(
        default=None,
        description="Decoder layers of the draft (default 1; 5 for algorithm dflash).",
        ge=1,
        le=16,
    )
    num_speculative_tokens: int | None = Field(
        default=None,
        description=(
            "k written into the draft's config and used for evaluation (default 3; dflash: the whole block, "
            "dflash.blockSize - 1, at most 16)."
        ),
        ge=1,
        le=16,
    )
    dflash: DFlashParams = Field(default_factory=DFlashParams, description="algorithm dflash only.")
    nodes: int = Field(default=1, description="Nodes; >1 runs an Indexed Job with torchrun.", ge=1, le=128)
    gpus_per_node: int = Field(
        default=1, description="GPUs per node (torchrun processes per node).", ge=1, le=16
    )
    checkpoint_every_steps: int | None = Field(
        default=None, description="Checkpoint interval in steps.", ge=1, le=100000000
    )
    seed: int = Field(default=42, description="Random seed.", ge=0, le=4294967295)
    fsdp: bool = Field(default=False, description="Shard the model with FSDP (multi-GPU).")
    max_retries: int = Field(
        default=3,
        description="Pod retries of the training Job; each retry resumes from the last checkpoint.",
        ge=0,
        le=100,
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description="Resources of each training pod (default: limits nvidia.com/gpu = gpusPerNode).",
    )
    runtime: Literal["job", "trainjob"] = Field(
        default="job",
        description=(
            "job: the train step is a Job (Indexed with torchrun for several nodes); trainjob: a Kubeflow "
            "Trainer v2 TrainJob on the ClusterTrainingRuntime trainingRuntime (Trainer >= 2.2)."
        ),
    )
    training_runtime: str = Field(
        default="speculators-torchrun",
        description="runtime trainjob: the ClusterTrainingRuntime (the chart ships speculators-torchrun).",
        max_length=253,
        json_schema_extra=cel(
            rule(
                f"self.matches({re2(DNS1123_SUBDOMAIN)})",
                "training.trainingRuntime must be a ClusterTrainingRuntime name (lowercase DNS-1123)",
            )
        ),
    )


class EvaluationSpec(K8sModel):
    """Offline evaluation of the trained draft on held-out data (speculators eval)."""

    max_samples: int = Field(default=200, description="Held-out samples to evaluate.", ge=1, le=100000)
    max_speculative_tokens: int = Field(
        default=8,
        description=(
            "Draft this many tokens per step while evaluating (at least training.numSpeculativeTokens), "
            "so status.evaluation has the acceptance and expected speed-up at every k up to it."
        ),
        ge=1,
        le=16,
    )
    prompt_set: str | None = Field(
        default=None,
        description=(
            "Fixed evaluation prompt set, a path inside the workspace claim (default: "
            "eval-prompts/<verifier>.jsonl). The first evaluation writes it from its held-out prompts; "
            "later trainings on the same claim are evaluated on the same prompts."
        ),
        max_length=253,
        json_schema_extra=cel(
            rule(
                "self.matches(r'^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$') && !self.contains('..')",
                "evaluation.promptSet must be a relative path inside the workspace, "
                "e.g. eval-prompts/llama-3.1-8b.jsonl (no leading /, no ..)",
            )
        ),
    )
    temperature: float = Field(
        default=0.0,
        description=(
            "0: greedy verification. Above 0: verification samples at this temperature as vLLM does for "
            "drafts it proposes greedily (its default); set it to the serving temperature so the evaluation "
            "and the promotion gate measure what the served draft will get."
        ),
        ge=0,
        le=10,
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Resources of the eval Job (default: limits nvidia.com/gpu = 1)."
    )


class PromotionSpec(K8sModel):
    """When a trained draft is worth serving: spec.deploy is applied only if the evaluation passes."""

    min_mean_acceptance_length: float | None = Field(
        default=None,
        description="Lowest evaluated mean acceptance length (tokens per verifier step) to promote.",
        ge=1,
        le=17,
    )
    min_expected_speedup: float = Field(
        default=1.0,
        description=(
            "Lowest expected speed-up (acceptance length / (1 + k x draft cost ratio)) to promote; the "
            "default 1.0 never serves a draft that would slow the verifier down."
        ),
        ge=0,
        le=100,
    )
    must_beat_serving: bool = Field(
        default=True,
        description=(
            "When spec.deploy names a Speculator that already serves another draft, promote only if the "
            "new draft's evaluated acceptance length at the served k beats the serving draft's live one "
            "(or its offline evaluation when no live window exists yet)."
        ),
    )
    min_live_drafts: int = Field(
        default=200,
        description="Drafts a live acceptance window needs before it counts as the serving draft's measure.",
        ge=1,
        le=100000000,
    )


class PvcOutput(K8sModel):
    """The workspace and final model: a PVC the operator creates (<name>-workspace), or an existing claim."""

    __cel__ = (
        rule(
            "!has(self.claimName) || !has(self.storageClassName)",
            "output.pvc.storageClassName applies to a claim the operator creates; remove it or claimName",
        ),
    )

    claim_name: str | None = Field(
        default=None,
        description="Use this existing PVC instead of creating <name>-workspace.",
        max_length=253,
    )
    size: Quantity = Field(
        default="200Gi",
        description="Size of the created claim (ignored with claimName).",
        json_schema_extra=cel(positive_quantity_rule("output.pvc.size", "200Gi")),
    )
    storage_class_name: str | None = Field(
        default=None,
        description="StorageClass of the created claim (default: the cluster default).",
        max_length=253,
    )
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"] = Field(
        default="ReadWriteOnce",
        description="Access mode of the created claim; ReadWriteMany when pods of a step span several nodes.",
    )


class S3Output(K8sModel):
    """Publish the final model to S3."""

    uri: str = Field(
        description="s3://bucket/prefix to upload the model to.",
        max_length=URI_MAX,
        json_schema_extra=cel(S3_PREFIX_RULE),
    )
    secret_ref: SecretRef = Field(
        description="Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (envFrom)."
    )


class HubOutput(K8sModel):
    """Push the final model to the Hugging Face Hub."""

    repo: str = Field(
        description="Hub repo id org/name.", max_length=256, json_schema_extra=cel(HUB_REPO_RULE)
    )
    private: bool = Field(default=True, description="Create the repo as private.")
    secret_ref: SecretRef = Field(description="Secret with HF_TOKEN (write access), loaded with envFrom.")


class OutputSpec(K8sModel):
    """Where the workspace and model live, and where the model is published."""

    pvc: PvcOutput = Field(
        default_factory=PvcOutput,
        description="Workspace claim; the model lands at pvc://<claim>/<name>/model.",
    )
    s3: S3Output | None = Field(default=None, description="Also upload the model to S3 (Publishing phase).")
    hub: HubOutput | None = Field(
        default=None, description="Also push the model to the Hub (Publishing phase)."
    )


class ImageSpec(K8sModel):
    """Container images of the Jobs."""

    runtime: str | None = Field(
        default=None,
        description="Image running the speculators CLI (default: the operator's pinned runtime).",
        max_length=512,
    )
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Image pull policy."
    )
    pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, description="imagePullSecrets of the pods.", max_length=16
    )


class DeploySpec(ServingSpec):
    """A Speculator created when training succeeds: verifier from this training, draft = its output."""

    name: str | None = Field(
        default=None,
        description="Name of the Speculator (default: the training's name).",
        max_length=55,
        json_schema_extra=cel(
            rule(
                f"self.matches({re2(DNS1035_LABEL)})",
                "deploy.name must be a DNS-1035 label (start with a letter)",
            )
        ),
    )


EAGLE_SHAPE_RULE = rule(
    "self.algorithm != 'eagle' || (!has(self.training.draftVocabSize) && "
    "(!has(self.training.numLayers) || self.training.numLayers == 1))",
    "algorithm eagle (EAGLE-1/HASS) has one decoder layer over the verifier's whole vocabulary: "
    "remove training.draftVocabSize and set training.numLayers to 1, or use algorithm eagle3",
    field_path=".algorithm",
)


EAGLE_HEAD_RULE = rule(
    "self.algorithm != 'eagle' || !has(self.training.trainLmHead) || !self.training.trainLmHead",
    "algorithm eagle (EAGLE-1/HASS) borrows the verifier's lm_head and has none to train: remove "
    "training.trainLmHead or use algorithm eagle3",
    field_path=".training.trainLmHead",
)


DFLASH_K_RULE = rule(
    "self.algorithm != 'dflash' || !has(self.training.numSpeculativeTokens) || "
    "self.training.numSpeculativeTokens < self.training.dflash.blockSize",
    "training.numSpeculativeTokens must be below training.dflash.blockSize: a DFlash block drafts "
    "blockSize - 1 tokens",
    field_path=".training.numSpeculativeTokens",
)


class TrainingTemplateSpec(K8sModel):
    """A SpeculatorTraining spec without its verifier: what Speculator.spec.retrain trains from."""

    __cel__ = (
        rule(
            "self.algorithm != 'eagle'",
            "retrain.template.algorithm must be eagle3 or dflash: the retrained draft is served by vLLM, "
            "which cannot serve the EAGLE-1/HASS format that algorithm eagle writes",
            field_path=".algorithm",
        ),
        DFLASH_K_RULE,
    )

    algorithm: Literal["eagle3", "eagle", "dflash"] = Field(
        default="eagle3",
        description="Draft architecture: eagle3 (EAGLE-3, train-time test); eagle (EAGLE-1 format with "
        "HASS's fusion bias and context alignment; one layer, the verifier's vocabulary); or dflash (a "
        "block of tokens per pass, served by vLLM as method dflash).",
    )
    data: DataSpec | None = Field(
        default=None,
        description=(
            "Training data (default for a retrain: the Speculator's captured traffic, answered again by its "
            "own verifier: regenerateResponses against its Service)."
        ),
    )
    datagen: DatagenSpec = Field(
        default_factory=DatagenSpec, description="Hidden-state generation (offline mode)."
    )
    training: TrainingParams = Field(default_factory=TrainingParams, description="Training run.")
    evaluation: EvaluationSpec = Field(
        default_factory=EvaluationSpec, description="Evaluation of the trained draft."
    )
    output: OutputSpec = Field(
        default_factory=OutputSpec, description="Workspace, model and publishing targets."
    )
    image: ImageSpec = Field(default_factory=ImageSpec, description="Container images.")
    scheduling: Scheduling | None = Field(
        default=None, description="Node selection and priority of every pod."
    )
    pod_metadata: PodMetadata | None = Field(
        default=None, description="Labels and annotations for every pod."
    )
    promotion: PromotionSpec = Field(
        default_factory=PromotionSpec,
        description="The gate a trained draft must pass before it is served.",
    )


def resolved_num_layers(spec: TrainingTemplateSpec) -> int:
    """training.numLayers, or the algorithm's default (DFlash: upstream's recipe, 5)."""
    return spec.training.num_layers or (5 if spec.algorithm == "dflash" else 1)


def resolved_k(spec: TrainingTemplateSpec) -> int:
    """training.numSpeculativeTokens, or the algorithm's default (DFlash: the whole block)."""
    if spec.training.num_speculative_tokens is not None:
        return spec.training.num_speculative_tokens
    # A Speculator drafts at most 16 tokens per step.
    return min(spec.training.dflash.block_size - 1, 16) if spec.algorithm == "dflash" else 3


class SpeculatorTrainingSpec(TrainingTemplateSpec):
    """Desired state of a SpeculatorTraining."""

    __cel__ = (
        EAGLE_SHAPE_RULE,
        EAGLE_HEAD_RULE,
        DFLASH_K_RULE,
        rule(
            "self.algorithm != 'eagle' || !has(self.deploy)",
            "deploy needs algorithm eagle3: vLLM 0.33 cannot serve the legacy EAGLE-1/HASS format that "
            "algorithm eagle writes (its draft is for evaluation and comparison)",
            field_path=".deploy",
        ),
    )

    verifier: ModelSource = Field(description="The verifier (target) model the draft learns to predict.")
    data: DataSpec = Field(description="Training data.")  # type: ignore[assignment]
    deploy: DeploySpec | None = Field(
        default=None,
        description="Create or update a Speculator serving the trained draft once it passes spec.promotion.",
    )


class StepStatus(K8sModel):
    """One pipeline step and its Job."""

    name: str = Field(description="prepare, datagen, train, eval or publish.")
    job_name: str | None = Field(default=None, description="The step's Job.")
    state: Literal["Pending", "Queued", "Running", "Succeeded", "Failed"] = Field(
        description="State of the step (Queued: suspended until Kueue admits it; the message says why)."
    )
    hash: str | None = Field(
        default=None, description="Hash of the step's inputs; a new hash re-runs the step."
    )
    attempts: int = Field(default=0, description="Pods started for this step (retries + 1).")
    start_time: str | None = Field(
        default=None, description="When the Job started.", json_schema_extra={"format": "date-time"}
    )
    completion_time: str | None = Field(
        default=None, description="When the step finished.", json_schema_extra={"format": "date-time"}
    )
    message: str | None = Field(default=None, description="Summary or failure message of the step.")


class Progress(K8sModel):
    """How far the pipeline is."""

    percent: int = Field(default=0, description="Overall progress, 0-100.", ge=0, le=100)
    completed_shards: int | None = Field(default=None, description="Datagen shards done.")
    total_shards: int | None = Field(default=None, description="Datagen shards in total.")


class TrainingMetrics(K8sModel):
    """The trainer's final metrics (from its summary)."""

    loss: float | None = Field(default=None, description="Final training loss.")
    accuracy: list[float] = Field(default_factory=list, description="Per-TTT-step (draft position) accuracy.")
    estimated_acceptance_length: float | None = Field(
        default=None, description="Acceptance length estimated from the accuracies."
    )
    tokens_per_second: float | None = Field(default=None, description="Training throughput.")


class EvaluationStatus(K8sModel):
    """Offline speculative decoding results on held-out data."""

    num_speculative_tokens: int | None = Field(default=None, description="k evaluated.")
    mean_acceptance_length: float | None = Field(default=None, description="Mean tokens per verifier step.")
    per_position_acceptance: list[float] = Field(
        default_factory=list, description="Acceptance rate per position."
    )
    expected_speedup: float | None = Field(default=None, description="Speed-up estimated by the cost model.")
    conditional_acceptance: list[float] = Field(
        default_factory=list,
        description="Acceptance rate of position i given that positions before it were accepted.",
    )
    acceptance_length_by_k: list[float] = Field(
        default_factory=list, description="Mean acceptance length at k = 1, 2, ... (index k-1)."
    )
    speedup_by_k: list[float] = Field(
        default_factory=list, description="Expected speed-up at k = 1, 2, ... (index k-1)."
    )
    draft_cost_ratio: float | None = Field(
        default=None, description="Cost of a draft pass relative to a verifier pass (cost model)."
    )
    prompt_set: str | None = Field(
        default=None, description="Hash of the prompts evaluated (equal hashes: comparable numbers)."
    )
    samples: int | None = Field(default=None, description="Prompts evaluated.")
    temperature: float | None = Field(
        default=None, description="Verification temperature of the evaluation (0: greedy)."
    )


class ServingMeasure(K8sModel):
    """What the draft already served by the deploy target achieved (the bar a new draft must beat)."""

    uri: str | None = Field(default=None, description="The serving draft.")
    source: str | None = Field(
        default=None, description="live (status.acceptance) or offline (its evaluation)."
    )
    num_speculative_tokens: int | None = Field(default=None, description="k the measure is for.")
    mean_acceptance_length: float | None = Field(default=None, description="Its mean acceptance length.")
    drafts: int | None = Field(default=None, description="Drafts in the live window.")


class PromotionStatus(K8sModel):
    """The gate's decision, made once when the evaluation finished (kept until the draft is retrained)."""

    promoted: bool = Field(description="Whether the draft passed spec.promotion.")
    reason: str = Field(description="Passed, BelowThreshold or NotBetterThanServing.")
    message: str = Field(default="", description="The numbers behind the decision.")
    decided_at: str | None = Field(
        default=None, description="When the gate decided.", json_schema_extra={"format": "date-time"}
    )
    eval_hash: str | None = Field(
        default=None, description="Hash of the evaluation and of spec.promotion decided on."
    )
    mean_acceptance_length: float | None = Field(
        default=None, description="The candidate's mean acceptance length that was compared."
    )
    expected_speedup: float | None = Field(default=None, description="The candidate's expected speed-up.")
    serving: ServingMeasure | None = Field(default=None, description="The serving draft compared against.")


class TrainingOutput(K8sModel):
    """The trained draft."""

    uri: str | None = Field(default=None, description="pvc://<claim>/<name>/model.")
    method: str | None = Field(default=None, description="vLLM speculative method of the draft.")
    num_speculative_tokens: int | None = Field(default=None, description="k of the draft.")
    max_speculative_tokens: int | None = Field(
        default=None, description="The most tokens the draft proposes per step (dflash: blockSize - 1)."
    )
    s3_uri: str | None = Field(default=None, description="Where the model was uploaded.")
    hub_repo: str | None = Field(default=None, description="Hub repo the model was pushed to.")


class SpeculatorRef(K8sModel):
    """The Speculator created by spec.deploy."""

    name: str = Field(description="Name of the Speculator.")


class SpeculatorTrainingStatus(K8sModel):
    """Observed state of a SpeculatorTraining."""

    observed_generation: int | None = Field(default=None, description="metadata.generation last reconciled.")
    phase: str | None = Field(
        default=None,
        description=(
            "Pending, Queued (a step waits for Kueue to admit it), PreparingData, GeneratingHiddenStates, "
            "Training, Evaluating, Publishing, Succeeded or Failed."
        ),
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "DataPrepared, HiddenStatesGenerated, Trained, Evaluated, Published, Promoted, Deployed and "
            "Ready (a draft the gate kept from serving still ends Ready: the training did its job)."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    steps: list[StepStatus] = Field(default_factory=list, description="Pipeline steps, in order.")
    retry_token: str | None = Field(
        default=None,
        description="Last value of the speculators.ai/retry annotation acted on (a new value re-runs the "
        "failed step, resuming from its checkpoints).",
        max_length=253,
    )
    progress: Progress | None = Field(default=None, description="Overall progress.")
    metrics: TrainingMetrics | None = Field(default=None, description="Trainer metrics.")
    evaluation: EvaluationStatus | None = Field(default=None, description="Evaluation results.")
    output: TrainingOutput | None = Field(default=None, description="The trained draft.")
    promotion: PromotionStatus | None = Field(default=None, description="The promotion gate's decision.")
    speculator_ref: SpeculatorRef | None = Field(
        default=None, description="Speculator created by spec.deploy."
    )
    start_time: str | None = Field(
        default=None, description="When the first Job started.", json_schema_extra={"format": "date-time"}
    )
    completion_time: str | None = Field(
        default=None,
        description="When the training succeeded or failed.",
        json_schema_extra={"format": "date-time"},
    )


class SpeculatorTraining(K8sModel):
    """Trains a speculative-decoding draft for a verifier: prepare data, hidden states, train, evaluate."""

    __cel__ = (
        rule(
            f"self.metadata.name.size() <= 55 && self.metadata.name.matches({re2(DNS1035_LABEL)})",
            "metadata.name must start with a letter, use lowercase letters, digits and '-', and be at most "
            "55 characters (Jobs append -datagen; Job names are label values of at most 63)",
            field_path=".metadata",
        ),
    )

    api_version: str = Field(default="speculators.ai/v1alpha1", description="APIVersion of the object.")
    kind: str = Field(default="SpeculatorTraining", description="Kind of the object.")
    metadata: dict = Field(default_factory=dict, description="Standard object metadata.")
    spec: SpeculatorTrainingSpec = Field(description="Desired state.")
    status: SpeculatorTrainingStatus | None = Field(default=None, description="Observed state.")
