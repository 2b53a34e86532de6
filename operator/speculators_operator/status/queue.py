"""What Kueue says about a workload it holds back: the Workload of a Job, and why it is not admitted yet.

Kueue creates one Workload (kueue.x-k8s.io/v1beta2) per Job it manages, controller-owned by the Job. While
the Job is suspended, the Workload's QuotaReserved condition (False) carries the reason: `Pending` with
the scheduler's words (e.g. insufficient unused quota for nvidia.com/gpu), or `Inadmissible` (no such
LocalQueue, a stopped ClusterQueue).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from speculators_operator.render.common import QUEUE_LABEL

OWNER_KINDS = ("Job", "TrainJob")


def owner_of(workload: dict[str, Any]) -> str | None:
    """The name of the Job (or TrainJob) that controls a Kueue Workload."""
    for ref in (workload.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") in OWNER_KINDS:
            return str(ref.get("name", "")) or None
    return None


def workloads_by_owner(workloads: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Kueue Workloads by the name of the Job (or TrainJob) that controls them; the newest wins (a Job
    replaced under the same name gets a new Workload before the old one is collected)."""
    out: dict[str, dict[str, Any]] = {}
    for wl in sorted(workloads, key=lambda w: (w.get("metadata") or {}).get("creationTimestamp") or ""):
        owner = owner_of(wl)
        if owner:
            out[owner] = wl
    return out


def queue_of(obj: dict[str, Any]) -> str | None:
    """The LocalQueue a workload asks Kueue for (its queue-name label)."""
    return ((obj.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)


def held_by_kueue(obj: dict[str, Any]) -> bool:
    """A suspended Job or TrainJob that names a LocalQueue: Kueue decides when it starts."""
    return bool((obj.get("spec") or {}).get("suspend")) and queue_of(obj) is not None


def _owned_by(workload: dict[str, Any], obj: dict[str, Any]) -> bool:
    uid = (obj.get("metadata") or {}).get("uid")
    refs = (workload.get("metadata") or {}).get("ownerReferences") or []
    return uid is None or any(ref.get("uid") == uid for ref in refs)


def not_installed_message(obj: dict[str, Any]) -> str:
    return (
        f"suspended for Kueue (LocalQueue {queue_of(obj)}), but this cluster serves no "
        "workloads.kueue.x-k8s.io: nothing will admit it; install Kueue or remove spec.scheduling.queueName"
    )


def waiting_message(obj: dict[str, Any], workload: dict[str, Any] | None) -> str:
    """Why Kueue has not admitted `obj` yet, in the Workload's own words."""
    queue = queue_of(obj)
    if workload is None or not _owned_by(workload, obj):
        return f"waiting for Kueue to admit it through LocalQueue {queue} (no Kueue Workload for it yet)"
    for cond in (workload.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "QuotaReserved" and cond.get("status") == "False":
            reason = cond.get("reason") or "Pending"
            text = (cond.get("message") or "").strip()
            return f"LocalQueue {queue}: {reason}: {text}" if text else f"LocalQueue {queue}: {reason}"
        if cond.get("type") == "QuotaReserved" and cond.get("status") == "True":
            return f"LocalQueue {queue}: quota reserved, waiting for admission checks"
    return f"LocalQueue {queue}: waiting for Kueue to evaluate its Workload {workload['metadata']['name']}"


# Kueue's pod integration (which covers Deployments) holds a pod back with this scheduling gate until
# its Workload is admitted.
POD_GATE = "kueue.x-k8s.io/admission"


def gated_pods(pods: Iterable[dict[str, Any]]) -> list[str]:
    """Names of the live pods Kueue's admission gate still holds."""
    return [
        p["metadata"]["name"]
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(g.get("name") == POD_GATE for g in (p.get("spec") or {}).get("schedulingGates") or [])
    ]
