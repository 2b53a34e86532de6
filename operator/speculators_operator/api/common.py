"""Types both kinds share: model sources, scheduling, pod metadata, embedded Kubernetes types, conditions."""

from __future__ import annotations

from typing import Annotated, Literal

from annotated_types import MaxLen
from pydantic import Field

from speculators_operator.api.base import (
    DNS1123_LABEL,
    DNS1123_SUBDOMAIN,
    FreeForm,
    K8sModel,
    Quantity,
    cel,
    re2,
    rule,
    secret_name_field,
)

# RE2 patterns for source URIs (speculators_core.sources parses the same forms).
HF_URI = r"^hf://[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$"
S3_URI = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"
PVC_URI = r"^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(/[^/].*)?$"
# What speculators_core.sources also refuses: '--' or '..' in a hub id, '..' in a path.
_NO_DOTS = (
    "!(self.startsWith('pvc://') && self.contains('..')) && "
    "!(self.startsWith('hf://') && (self.contains('--') || self.contains('..')))"
)
SOURCE_URI_RULE = rule(
    f"({_NO_DOTS}) && (self.matches({re2(HF_URI)}) || self.matches({re2(S3_URI)}) || "
    f"self.matches({re2(PVC_URI)}))",
    "must be hf://org/name, s3://bucket/prefix or pvc://claim/path (no '..' in a path or hub id, "
    "no '--' in a hub id)",
)
# Dataset URIs may carry a query (hf://org/name?split=train&config=x).
DATASET_HF_URI = (
    r"^hf://[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?(\?[A-Za-z0-9_=&.-]*)?$"
)
DATASET_URI_RULE = rule(
    f"({_NO_DOTS}) && (self.matches({re2(DATASET_HF_URI)}) || self.matches({re2(S3_URI)}) || "
    f"self.matches({re2(PVC_URI)}))",
    "must be hf://org/name, s3://bucket/prefix or pvc://claim/path (no '..' in a path or hub id, "
    "no '--' in a hub id)",
)
URI_MAX = 1024
# metav1 qualified names (label/annotation keys) and label values.
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
NAME_MAX = 253


class LocalObjectReference(K8sModel):
    """A reference to an object in the same namespace."""

    name: str = secret_name_field("Name of the object in the same namespace.")


class SecretRef(K8sModel):
    """A Secret in the same namespace, loaded into the pods with envFrom (the operator never reads it)."""

    name: str = secret_name_field("Name of the Secret in the same namespace.")


class ModelSource(K8sModel):
    """Where a model comes from: a Hugging Face repo, an S3 prefix, or a path on a PersistentVolumeClaim."""

    __cel__ = (
        rule("!has(self.revision) || self.uri.startsWith('hf://')", "revision applies only to hf:// sources"),
    )

    uri: str = Field(
        description=(
            "Model location: hf://org/name (Hugging Face Hub), s3://bucket/prefix, or pvc://claim/path "
            "(mounted read-only at /mnt/pvc/<claim>)."
        ),
        max_length=URI_MAX,
        json_schema_extra=cel(SOURCE_URI_RULE),
    )
    revision: str | None = Field(
        default=None, description="Hub revision (branch, tag or commit); hf:// only.", max_length=255
    )
    secret_ref: SecretRef | None = Field(
        default=None,
        description=(
            "Secret with credentials, loaded with envFrom: HF_TOKEN for hf://; AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY and optionally AWS_ENDPOINT_URL, AWS_DEFAULT_REGION for s3://."
        ),
    )


def _non_negative_quantities(what: str, example: str) -> dict:
    # The Quantity pattern admits a leading minus; the Pod would then be refused long after admission.
    return cel(
        rule(
            "self.all(k, isQuantity(string(self[k])) && "
            "!quantity(string(self[k])).isLessThan(quantity('0')))",
            f"{what} values must be non-negative quantities, e.g. {example}",
        )
    )


class ResourceRequirements(K8sModel):
    """Compute resources of a container (as in a Pod spec)."""

    limits: dict[str, Quantity] | None = Field(
        default=None,
        max_length=32,
        description='Maximum resources, e.g. {"nvidia.com/gpu": 1, "memory": "64Gi"}.',
        json_schema_extra=_non_negative_quantities(
            "resources.limits", '{"nvidia.com/gpu": 1, "memory": "64Gi"}'
        ),
    )
    requests: dict[str, Quantity] | None = Field(
        default=None,
        max_length=32,
        description='Minimum resources the scheduler reserves, e.g. {"cpu": "8"}.',
        json_schema_extra=_non_negative_quantities("resources.requests", '{"cpu": "8", "memory": "32Gi"}'),
    )


class Toleration(K8sModel):
    """A Pod toleration (as in a Pod spec)."""

    key: str | None = Field(
        default=None, description="Taint key the toleration applies to; empty matches all keys."
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (default Equal)."
    )
    value: str | None = Field(default=None, description="Taint value to match with operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None,
        description="With effect NoExecute: how long the pod stays bound after the taint appears.",
        ge=0,
        le=31536000,
    )


# Name components that mark a credential (HF_TOKEN, AWS_SECRET_ACCESS_KEY, VLLM_API_KEY, DB_PASSWORD, ...).
CREDENTIAL_NAME = (
    r"(?i)(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|APIKEY|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIALS?)(_|$)"
)


class EnvVar(K8sModel):
    """An environment variable (as in a container spec); use valueFrom.secretKeyRef for secrets."""

    __cel__ = (
        {
            "rule": f"!has(self.value) || self.value == '' || !self.name.matches({re2(CREDENTIAL_NAME)})",
            "messageExpression": (
                "'env ' + self.name + ' looks like a credential and would be rendered in clear text into the "
                "pod spec: put it in a Secret and use valueFrom.secretKeyRef (or the model source\\'s "
                "secretRef), e.g. valueFrom: {secretKeyRef: {name: hf-token, key: HF_TOKEN}}'"
            ),
            "message": "env values that look like credentials must come from a Secret (valueFrom)",
            "fieldPath": ".value",
        },
        rule("!(has(self.value) && has(self.valueFrom))", "env: set value or valueFrom, not both"),
    )

    name: str = Field(
        description="Variable name, e.g. VLLM_LOGGING_LEVEL.",
        min_length=1,
        max_length=NAME_MAX,
        json_schema_extra=cel(
            rule(
                "self.matches(r'^[-._a-zA-Z][-._a-zA-Z0-9]*$')",
                "env name must be a C identifier-like name such as VLLM_LOGGING_LEVEL (letters, digits, "
                "'_', '-', '.'; not starting with a digit)",
            )
        ),
    )
    value: str | None = Field(
        default=None, description="Literal value. Never put secrets here: use valueFrom."
    )
    value_from: FreeForm | None = Field(
        default=None,
        description=(
            "Source of the value (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef), as in a Pod."
        ),
    )


class Scheduling(K8sModel):
    """Where the pods may run."""

    node_selector: dict[str, str] | None = Field(default=None, description="Node labels the pods require.")
    tolerations: list[Toleration] | None = Field(
        default=None, description="Tolerations, e.g. for tainted GPU nodes.", max_length=64
    )
    affinity: FreeForm | None = Field(
        default=None, description="Pod affinity/anti-affinity and node affinity, as in a Pod spec."
    )
    priority_class_name: str | None = Field(
        default=None,
        description="PriorityClass of the pods.",
        max_length=NAME_MAX,
        json_schema_extra=cel(
            rule(
                f"self.matches({re2(DNS1123_SUBDOMAIN)})",
                "scheduling.priorityClassName must be a PriorityClass name (lowercase DNS-1123 subdomain, "
                "e.g. high-priority)",
            )
        ),
    )
    queue_name: str | None = Field(
        default=None,
        description=(
            "Kueue LocalQueue (label kueue.x-k8s.io/queue-name): on every Job and TrainJob (Jobs are created "
            "suspended, for Kueue to admit against the queue's quota) and on the serving workload."
        ),
        max_length=63,
        json_schema_extra=cel(
            rule(
                f"self.matches({re2(DNS1123_LABEL)})",
                "scheduling.queueName must be a LocalQueue name (lowercase DNS-1123 label, e.g. gpu-team)",
            )
        ),
    )
    service_account_name: str | None = Field(
        default=None,
        description="ServiceAccount the pods run as (default: the namespace's default).",
        max_length=NAME_MAX,
        json_schema_extra=cel(
            rule(
                f"self.matches({re2(DNS1123_SUBDOMAIN)})",
                "scheduling.serviceAccountName must be a ServiceAccount name (lowercase DNS-1123 subdomain, "
                "e.g. vllm-runner)",
            )
        ),
    )


class PodMetadata(K8sModel):
    """Labels and annotations copied onto every pod template (e.g. for a mesh, cost tags, test markers)."""

    __cel__ = (
        rule(
            "!has(self.labels) || self.labels.all(k, !k.startsWith('app.kubernetes.io/') && "
            "!k.startsWith('speculators.ai/'))",
            "podMetadata.labels may not set app.kubernetes.io/* or speculators.ai/* labels: "
            "the operator owns them",
        ),
    )

    labels: dict[str, Annotated[str, MaxLen(63)]] | None = Field(
        default=None,
        description="Labels added to every pod.",
        max_length=64,
        json_schema_extra=cel(
            rule(
                f"self.all(k, k.size() <= 253 && k.matches({re2(QUALIFIED_NAME)}) && "
                f"self[k].matches({re2(LABEL_VALUE)}))",
                "podMetadata.labels: keys must be qualified names (example.com/team) and values at most 63 "
                "letters, digits, '-', '_' or '.', beginning and ending with a letter or digit",
            )
        ),
    )
    annotations: dict[str, str] | None = Field(
        default=None,
        description="Annotations added to every pod.",
        max_length=64,
        json_schema_extra=cel(
            rule(
                f"self.all(k, k.size() <= 253 && k.matches({re2(QUALIFIED_NAME)}))",
                "podMetadata.annotations keys must be qualified names such as example.com/owner",
            )
        ),
    )


class PodSecurityOverrides(K8sModel):
    """Fixed IDs, only for images that need them on vanilla clusters (OpenShift assigns its own)."""

    run_as_user: int | None = Field(
        default=None, description="UID the containers run as.", ge=1, le=2147483647
    )
    run_as_group: int | None = Field(
        default=None, description="Primary GID of the containers.", ge=0, le=2147483647
    )
    fs_group: int | None = Field(
        default=None, description="Group that owns mounted volumes.", ge=0, le=2147483647
    )


class Condition(K8sModel):
    """A metav1.Condition: the state of one aspect of the resource."""

    type: str = Field(description="Condition type, e.g. Ready, Trained, DeploymentReady.", max_length=316)
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word saying why.", max_length=1024)
    message: str = Field(default="", description="Human-readable details.", max_length=32768)
    last_transition_time: str = Field(
        description="When status last changed (RFC 3339).", json_schema_extra={"format": "date-time"}
    )
    observed_generation: int | None = Field(
        default=None, description="metadata.generation this condition was computed for.", ge=0
    )


def source_uri_ok(uri: str) -> bool:
    """Python mirror of SOURCE_URI_RULE (unit tests compare the two)."""
    import re

    if (uri.startswith(("pvc://", "hf://")) and ".." in uri) or (uri.startswith("hf://") and "--" in uri):
        return False
    return any(re.match(p, uri) for p in (HF_URI, S3_URI, PVC_URI))


__all__ = [
    "DNS1123_SUBDOMAIN",
    "Condition",
    "EnvVar",
    "LocalObjectReference",
    "ModelSource",
    "PodMetadata",
    "PodSecurityOverrides",
    "ResourceRequirements",
    "Scheduling",
    "SecretRef",
    "Toleration",
    "source_uri_ok",
]
