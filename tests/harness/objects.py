"""Manifests for tests, restricted-Pod-Security compliant like the pods the operator renders (see
docs/architecture.md, "Pods the operator renders"), so they run in the `namespace` fixture."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
IMAGE = "registry.invalid/sim:latest"  # never pulled: kwok runs no containers


def restricted_container(name: str = "main", image: str = IMAGE, gpus: int = 0, **extra: Any) -> Obj:
    c: Obj = {
        "name": name,
        "image": image,
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if gpus:
        c["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    c.update(extra)
    return c


def restricted_pod_spec(containers: list[Obj] | None = None, **extra: Any) -> Obj:
    spec: Obj = {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": containers or [restricted_container()],
    }
    spec.update(extra)
    return spec


def pod(
    name: str, *, annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None, **spec: Any
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}, "labels": labels or {}},
        "spec": restricted_pod_spec(**spec),
    }


def job(
    name: str,
    *,
    annotations: dict[str, str] | None = None,
    backoff_limit: int = 0,
    pod_failure_policy: Obj | None = None,
    **spec: Any,
) -> Obj:
    """A Job whose pod template carries `annotations` (where the sim.speculators.ai markers go)."""
    job_spec: Obj = {
        "backoffLimit": backoff_limit,
        "template": {
            "metadata": {"annotations": annotations or {}},
            "spec": restricted_pod_spec(restartPolicy="Never", **spec),
        },
    }
    if pod_failure_policy:
        job_spec["podFailurePolicy"] = pod_failure_policy
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": job_spec}


def deployment(
    name: str, *, replicas: int = 1, annotations: dict[str, str] | None = None, **spec: Any
) -> Obj:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations or {}},
                "spec": restricted_pod_spec(**spec),
            },
        },
    }
