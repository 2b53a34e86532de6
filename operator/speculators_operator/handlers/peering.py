"""Whether this replica is the active one, by Kopf's peering rule, for the loops Kopf does not pause.

Kopf pauses its own watches when a peer with a higher or equal priority is alive; our scrape and resync
loops are not Kopf's, so they ask this gate first. Same data, same rule: the peering object's status maps
each peer's identity to {priority, lifetime, lastseen}.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from speculators_operator.kube import Kube, KubeError


def own_identity() -> str:
    """POD_ID (the pod's name, set by the chart) or user@host/pid, as Kopf names peers."""
    pod = os.environ.get("POD_ID")
    if pod:
        return pod
    return f"{getpass.getuser()}@{socket.gethostname()}/{os.getpid()}"


def blocking_peers(status: dict[str, Any], identity: str, priority: int, now: datetime) -> list[str]:
    """Live peers other than us whose priority is >= ours (Kopf pauses for those)."""
    out = []
    for peer, info in (status or {}).items():
        if peer == identity or not isinstance(info, dict):
            continue
        try:
            lastseen = datetime.fromisoformat(str(info.get("lastseen")).replace("Z", "+00:00"))
            lifetime = timedelta(seconds=int(info.get("lifetime", 60)))
        except (TypeError, ValueError):
            continue
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=UTC)
        if lastseen + lifetime > now and int(info.get("priority", 0)) >= priority:
            out.append(peer)
    return out


class PeeringGate:
    def __init__(
        self,
        kube: Kube,
        *,
        name: str | None,
        identity: str,
        priority: int,
        namespaces: list[str],
        ttl: float = 2.0,
    ) -> None:
        self.kube = kube
        self.name = name
        self.identity = identity
        self.priority = priority
        self.namespaces = namespaces
        self.ttl = ttl
        self._checked = 0.0
        self._active = True

    def _paths(self) -> list[str]:
        if self.namespaces:
            return [f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings/{self.name}" for ns in self.namespaces]
        return [f"/apis/kopf.dev/v1/clusterkopfpeerings/{self.name}"]

    def active(self) -> bool:
        """True when standalone, or when no live peer outranks or ties with us (cached for `ttl`)."""
        if not self.name:
            return True
        if time.monotonic() - self._checked < self.ttl:
            return self._active
        now = datetime.now(UTC)
        active = True
        for path in self._paths():
            try:
                obj = self.kube.get_path(path)
            except KubeError:
                continue  # unreadable: Kopf would not see it either, and does not pause
            if obj and blocking_peers(obj.get("status") or {}, self.identity, self.priority, now):
                active = False
        self._active, self._checked = active, time.monotonic()
        return active
