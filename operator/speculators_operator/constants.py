"""Names shared by every layer: API group, labels, annotations, field manager (docs/architecture.md)."""

from __future__ import annotations

from typing import Final

GROUP: Final = "speculators.ai"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

TRAINING_KIND: Final = "SpeculatorTraining"
TRAINING_PLURAL: Final = "speculatortrainings"
SPECULATOR_KIND: Final = "Speculator"
SPECULATOR_PLURAL: Final = "speculators"
BENCHMARK_KIND: Final = "SpeculatorBenchmark"
BENCHMARK_PLURAL: Final = "speculatorbenchmarks"

OPERATOR_NAME: Final = "speculators-operator"
# One field manager for every server-side apply, so ownership of fields never splits between callers.
FIELD_MANAGER: Final = OPERATOR_NAME

# Kopf's own bookkeeping lives under the project's prefix, never kopf.zalando.org.
ANNOTATION_PREFIX: Final = GROUP
FINALIZER: Final = f"{GROUP}/finalizer"

# Labels every child carries (and nothing copied from the parent).
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_TRAINING: Final = f"{GROUP}/training"
LABEL_SPECULATOR: Final = f"{GROUP}/speculator"
LABEL_BENCHMARK: Final = f"{GROUP}/benchmark"
# On canary vLLM pods (a retrained draft on trial): scraped apart from the stable pods.
LABEL_TRACK: Final = f"{GROUP}/track"
TRACK_CANARY: Final = "canary"
PART_OF: Final = "speculators"
APP_TRAINING: Final = "speculator-training"
APP_SPECULATOR: Final = "speculator"
APP_BENCHMARK: Final = "speculator-benchmark"

ANNOTATION_SPEC_HASH: Final = f"{GROUP}/spec-hash"
ANNOTATION_STEP: Final = f"{GROUP}/step"
# On KServe pod templates: the method and k (or batch-size schedule) the pods draft.
ANNOTATION_SPECULATIVE: Final = f"{GROUP}/speculative"
# Set (to any new value) on a SpeculatorTraining to re-run its failed step without touching spec (GitOps).
ANNOTATION_RETRY: Final = f"{GROUP}/retry"
# On vLLM Deployments: the draft URI they serve.
ANNOTATION_DRAFT: Final = f"{GROUP}/draft"
# On an InferenceService: the draft its spec.canary serves (to tell a pruned spec.canary from none).
ANNOTATION_CANARY: Final = f"{GROUP}/canary"
# On a retrain SpeculatorTraining: the draft it was started to replace.
ANNOTATION_RETRAIN_OF: Final = f"{GROUP}/retrain-of"

# Job controller's labels/annotations we read.
JOB_NAME_LABEL: Final = "batch.kubernetes.io/job-name"
JOB_COMPLETION_INDEX_ANNOTATION: Final = "batch.kubernetes.io/job-completion-index"

# Paths inside pods.
WORKSPACE_MOUNT: Final = "/workspace"
MODELS_MOUNT: Final = "/models"
CAPTURE_MOUNT: Final = "/capture"
SCRATCH_MOUNT: Final = "/scratch"
PVC_MOUNT_ROOT: Final = "/mnt/pvc"
TERMINATION_LOG: Final = "/dev/termination-log"

JOB_TTL_SECONDS: Final = 3600
TORCHRUN_PORT: Final = 29500
# Exit codes of the `speculators` CLI that mean "permanent: do not retry" (docs/architecture.md).
PERMANENT_EXIT_CODES: Final = (2, 3)
