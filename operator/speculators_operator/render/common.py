"""Building blocks every rendered pod shares: labels, owner references, security, caches, sources.

Pure functions returning plain dicts (the Kubernetes JSON), so tests compare them field by field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel

from speculators_core import version
from speculators_core.sources import Source, parse_source
from speculators_operator import constants as c
from speculators_operator.api.common import (
    ModelSource,
    PodMetadata,
    PodSecurityOverrides,
    ResourceRequirements,
    Scheduling,
)


@dataclass(frozen=True)
class Images:
    """Default images (operator flags may point them at a mirror)."""

    runtime: str = version.RUNTIME_IMAGE
    vllm: str = version.VLLM_IMAGE


SpecT = TypeVar("SpecT", bound=BaseModel)


@dataclass
class ResourceContext(Generic[SpecT]):
    """A custom resource as a renderer needs it: the raw object (owner refs, labels) and its parsed spec."""

    spec_model: ClassVar[type[BaseModel]]

    body: dict[str, Any]
    spec: SpecT
    images: Images = field(default_factory=Images)

    @classmethod
    def of(cls, body: dict[str, Any], images: Images | None = None) -> Self:
        spec = cls.spec_model.model_validate(body.get("spec") or {})
        return cls(body=body, spec=spec, images=images or Images())  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.body["metadata"]["namespace"]


def spec_hash(value: Any) -> str:
    """Short stable hash of JSON-able inputs (annotation speculators.ai/spec-hash)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def labels(app: str, component: str, instance: str, owner_key: str, owner: str) -> dict[str, str]:
    """Exactly the labels of the contract: nothing copied from the parent (Argo CD tracking stays clean)."""
    return {
        c.LABEL_NAME: app,
        c.LABEL_INSTANCE: instance,
        c.LABEL_COMPONENT: component,
        c.LABEL_MANAGED_BY: c.OPERATOR_NAME,
        c.LABEL_PART_OF: c.PART_OF,
        owner_key: owner,
    }


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", c.API_VERSION),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(
    owner: dict[str, Any], name: str, child_labels: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner["metadata"]["namespace"],
        "labels": dict(child_labels),
        "ownerReferences": [owner_reference(owner)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def claim(
    owner: dict[str, Any],
    name: str,
    child_labels: dict[str, str],
    *,
    access_mode: str,
    size: str,
    storage_class: str | None,
) -> dict[str, Any]:
    """A PersistentVolumeClaim the operator creates for `owner` (workspace, model cache, traffic)."""
    spec: dict[str, Any] = {"accessModes": [access_mode], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": child_metadata(owner, name, child_labels),
        "spec": spec,
    }


def pod_security_context(overrides: PodSecurityOverrides | None = None) -> dict[str, Any]:
    """Pod Security "restricted" and OpenShift restricted-v2: non-root without a fixed UID."""
    ctx: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if overrides is not None:
        ctx.update(overrides.wire())
    return ctx


def container_security_context() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


# Writable caches: images run as an arbitrary UID whose HOME (/) is read-only.
SCRATCH_ENV = (
    ("HOME", f"{c.SCRATCH_MOUNT}/home"),
    ("HF_HOME", f"{c.SCRATCH_MOUNT}/hf"),
    ("XDG_CACHE_HOME", f"{c.SCRATCH_MOUNT}/cache"),
    ("TRITON_CACHE_DIR", f"{c.SCRATCH_MOUNT}/cache/triton"),
    ("VLLM_CACHE_ROOT", f"{c.SCRATCH_MOUNT}/cache/vllm"),
    ("TORCHINDUCTOR_CACHE_DIR", f"{c.SCRATCH_MOUNT}/cache/inductor"),
)


def scratch_env() -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in SCRATCH_ENV]


def base_volumes() -> list[dict[str, Any]]:
    """scratch (caches) and a memory-backed /dev/shm (NCCL and dataloaders need more than 64 MiB)."""
    return [
        {"name": "scratch", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
    ]


def base_mounts() -> list[dict[str, Any]]:
    return [
        {"name": "scratch", "mountPath": c.SCRATCH_MOUNT},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]


def resources(spec: ResourceRequirements | None, default: dict[str, Any] | None = None) -> dict[str, Any]:
    if spec is not None and (spec.limits or spec.requests):
        return spec.wire()
    return dict(default or {})


def gpu_limits(count: int) -> dict[str, Any]:
    return {"limits": {"nvidia.com/gpu": count}}


def pvc_volume_name(claim: str) -> str:
    """Volume names are DNS-1123 labels (63); long claim names get a hash suffix."""
    name = f"pvc-{claim}".replace(".", "-")
    if len(name) <= 63:
        return name
    return f"{name[:46]}-{spec_hash(claim)}"


@dataclass
class PodParts:
    """Volumes, mounts and init containers a pod needs for its model/data sources."""

    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    init_containers: list[dict[str, Any]] = field(default_factory=list)
    secret_refs: list[str] = field(default_factory=list)

    def add_volume(self, volume: dict[str, Any], mount: dict[str, Any]) -> None:
        if all(v["name"] != volume["name"] for v in self.volumes):
            self.volumes.append(volume)
        if all(m["name"] != mount["name"] or m["mountPath"] != mount["mountPath"] for m in self.mounts):
            self.mounts.append(mount)

    def mount_claim(self, claim: str) -> str:
        """Mount a claim read-only at /mnt/pvc/<claim> (the contract's place); return the mount path."""
        name = pvc_volume_name(claim)
        path = f"{c.PVC_MOUNT_ROOT}/{claim}"
        self.add_volume(
            {"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}},
            {"name": name, "mountPath": path, "readOnly": True},
        )
        return path


def env_from(secret_names: list[str]) -> list[dict[str, Any]]:
    seen: list[str] = []
    for name in secret_names:
        if name not in seen:
            seen.append(name)
    return [{"secretRef": {"name": n}} for n in seen]


def fetch_container(
    name: str,
    image: str,
    pull_policy: str,
    uri: str,
    dest: str,
    *,
    revision: str | None,
    secret: str | None,
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    """An init container running `speculators fetch` (credentials only through envFrom)."""
    args = [uri, "--dest", dest]
    if revision:
        args += ["--revision", revision]
    args += ["--summary-path", c.TERMINATION_LOG]
    container = cli_container(name, image, pull_policy, "fetch", args, mounts=mounts)
    if secret:
        container["envFrom"] = env_from([secret])
    return container


def cli_container(
    name: str,
    image: str,
    pull_policy: str,
    command: str,
    args: list[str],
    *,
    mounts: list[dict[str, Any]],
    env: list[dict[str, Any]] | None = None,
    resource_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": ["speculators", command],
        "args": args,
        "env": [*scratch_env(), *(env or [])],
        "resources": dict(resource_spec or {}),
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [*base_mounts(), *mounts],
    }
    return container


def place_source(
    parts: PodParts,
    source: ModelSource | Source | str,
    *,
    role: str,
    dest: str,
    image: str,
    pull_policy: str,
    dest_mounts: list[dict[str, Any]],
    revision: str | None = None,
    secret: str | None = None,
) -> str:
    """Make a model source available in the pod; return its local path.

    pvc:// is mounted read-only; hf:// and s3:// are downloaded by an init container `fetch-<role>`.
    """
    if isinstance(source, ModelSource):
        revision = source.revision
        secret = source.secret_ref.name if source.secret_ref else None
        source = source.uri
    parsed = parse_source(source) if isinstance(source, str) else source
    if parsed.scheme == "pvc":
        assert parsed.claim
        root = parts.mount_claim(parsed.claim)
        return f"{root}/{parsed.path}" if parsed.path else root
    parts.init_containers.append(
        fetch_container(
            f"fetch-{role}",
            image,
            pull_policy,
            parsed.uri,
            dest,
            revision=revision,
            secret=secret,
            mounts=dest_mounts,
        )
    )
    return dest


def pod_template_metadata(
    pod_labels: dict[str, str], pod_metadata: PodMetadata | None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """Our labels win over the user's (a CEL rule also rejects user labels in our key spaces)."""
    meta_labels = dict(pod_metadata.labels or {}) if pod_metadata else {}
    meta_labels.update(pod_labels)
    meta: dict[str, Any] = {"labels": meta_labels}
    merged = dict(pod_metadata.annotations or {}) if pod_metadata else {}
    merged.update(annotations or {})
    if merged:
        meta["annotations"] = merged
    return meta


def apply_scheduling(pod_spec: dict[str, Any], scheduling: Scheduling | None) -> None:
    if scheduling is None:
        return
    if scheduling.node_selector:
        pod_spec["nodeSelector"] = dict(scheduling.node_selector)
    if scheduling.tolerations:
        pod_spec["tolerations"] = [t.wire() for t in scheduling.tolerations]
    if scheduling.affinity:
        pod_spec["affinity"] = dict(scheduling.affinity)
    if scheduling.priority_class_name:
        pod_spec["priorityClassName"] = scheduling.priority_class_name
    if scheduling.service_account_name:
        pod_spec["serviceAccountName"] = scheduling.service_account_name


QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def queue_name(scheduling: Scheduling | None) -> str | None:
    """The Kueue LocalQueue of spec.scheduling.queueName, if any."""
    return scheduling.queue_name if scheduling is not None else None


def job_failure_policy() -> dict[str, Any]:
    """Exit codes 2/3 of the CLI are permanent (bad input, incompatible model): fail the Job at once.

    Pods evicted by preemption or node drain (DisruptionTarget) do not count against backoffLimit.
    """
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"operator": "In", "values": list(c.PERMANENT_EXIT_CODES)},
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }
