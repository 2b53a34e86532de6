"""metav1.Condition bookkeeping: set without losing lastTransitionTime, aggregate into Ready.

In-progress is `Unknown`, failure is `False`: Argo CD's health scripts (and kstatus) read Ready=False
as Degraded and Unknown as Progressing, so a training that is merely running must not be False.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]
READY = "Ready"


def now_iso(now: datetime | None = None) -> str:
    """RFC 3339 with seconds precision, as Kubernetes writes times."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(ts: str | None) -> float | None:
    """Epoch seconds of an RFC 3339 time (as Kubernetes and now_iso write them); None if absent or bad."""
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class Cond:
    """A desired condition before times are attached."""

    type: str
    status: Status
    reason: str
    message: str = ""


def find(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    for cond in conditions or []:
        if cond.get("type") == type_:
            return cond
    return None


def merge(
    previous: list[dict[str, Any]] | None, desired: list[Cond], generation: int | None, now: str
) -> list[dict[str, Any]]:
    """The full conditions list (merge patches replace lists), in desired order.

    lastTransitionTime changes only when status changes; conditions no longer desired are dropped.
    """
    out = []
    for cond in desired:
        old = find(previous, cond.type)
        transition = old["lastTransitionTime"] if old and old.get("status") == cond.status else now
        item: dict[str, Any] = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message[:32768],
            "lastTransitionTime": transition,
        }
        if generation is not None:
            item["observedGeneration"] = generation
        out.append(item)
    return out


def aggregate(parts: list[Cond], *, ready_reason: str = "Ready", ready_message: str = "") -> Cond:
    """Ready: False if any part is False, Unknown if any is Unknown, else True (first culprit explains)."""
    for wanted in ("False", "Unknown"):
        for cond in parts:
            if cond.status == wanted:
                return Cond(READY, wanted, cond.reason, f"{cond.type}: {cond.message}".rstrip(": "))
    return Cond(READY, "True", ready_reason, ready_message)
