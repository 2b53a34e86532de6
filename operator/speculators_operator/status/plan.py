"""The result of one reconcile decision: what to write to the cluster and what to tell the user."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event on the parent object."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Plan:
    """Pure output of a derive function; the handler only executes it.

    apply:  server-side applied (Deployment, Service, child Speculator) unless observed unchanged since our
            last apply of the same object: drift is corrected.
    create: created only when absent (Jobs and PVCs, whose specs are immutable once created).
    delete: objects to delete (a Job whose inputs changed).
    """

    status: dict[str, Any]
    apply: list[dict[str, Any]] = field(default_factory=list)
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def phase_events(kind: str, old: str | None, new: str | None, message: str, *, failed: bool) -> list[Event]:
    """One Event per phase transition (Warning for failure)."""
    if not new or new == old:
        return []
    if failed:
        return [Event("Warning", new, message or f"{kind} failed")]
    return [Event("Normal", new, message or f"{kind} is {new}")]
