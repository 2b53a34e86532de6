"""Types both kinds share: model sources, scheduling, pod metadata, embedded Kubernetes types, conditions."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from speculators_operator.api.base import (
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
HF_URI = r"^hf://[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$"
S3_URI = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"
PVC_URI = r"^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[^/].*)?$"
SOURCE_URI_RULE = rule(
    f"self.matches({re2(HF_URI)}) || self.matches({re2(S3_URI)}) || self.matches({re2(PVC_URI)})",
    "must be hf://org/name, s3://bucket/prefix or pvc://claim/path",
)
# Dataset URIs may carry a query (hf://org/name?split=train&config=x).
DATASET_HF_URI = r"^hf://[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?(\?[A-Za-z0-9_=&.-]*)?$"
DATASET_URI_RULE = rule(
    f"self.matches({re2(DATASET_HF_URI)}) || self.matches({re2(S3_URI)}) || self.matches({re2(PVC_URI)})",
    "must be hf://org/name, s3://bucket/prefix or pvc://claim/path",
)
URI_MAX = 1024
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


class ResourceRequirements(K8sModel):
    """Compute resources of a container (as in a Pod spec)."""

    limits: dict[str, Quantity] | None = Field(
        default=None, description='Maximum resources, e.g. {"nvidia.com/gpu": 1, "memory": "64Gi"}.'
    )
    requests: dict[str, Quantity] | None = Field(
        default=None, description='Minimum resources the scheduler reserves, e.g. {"cpu": "8"}.'
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
    )


class EnvVar(K8sModel):
    """An environment variable (as in a container spec); use valueFrom.secretKeyRef for secrets."""

    name: str = Field(description="Variable name.", min_length=1, max_length=NAME_MAX)
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
        default=None, description="PriorityClass of the pods.", max_length=NAME_MAX
    )
    service_account_name: str | None = Field(
        default=None,
        description="ServiceAccount the pods run as (default: the namespace's default).",
        max_length=NAME_MAX,
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

    labels: dict[str, str] | None = Field(default=None, description="Labels added to every pod.")
    annotations: dict[str, str] | None = Field(default=None, description="Annotations added to every pod.")


class PodSecurityOverrides(K8sModel):
    """Fixed IDs, only for images that need them on vanilla clusters (OpenShift assigns its own)."""

    run_as_user: int | None = Field(default=None, description="UID the containers run as.", ge=1)
    run_as_group: int | None = Field(default=None, description="Primary GID of the containers.", ge=0)
    fs_group: int | None = Field(default=None, description="Group that owns mounted volumes.", ge=0)


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
