"""The operator's children as its watches last saw them: reads a reconcile makes without an API call.

At a fleet's size most of a reconcile's API calls were reads of its own children (Deployments, Jobs,
Pods, Services), and the API server's CPU, not the operator's, bounded how fast a burst of new objects
got theirs. The watches Kopf already runs on those kinds (label-selected to ours) feed this cache; a
reconcile reads from it once it is *synced*: a LIST of each kind has been merged in since this replica
became the active one. Until then, and for every other kind, reads go to the API server.

Stale is safe here, as in any informer-backed controller: creates of a child that exists answer 409
(get-or-create), server-side applies are idempotent, deletes carry a uid precondition, and every change
of a child is an event that reconciles its owner again. What an event stream cannot announce (a child
deleted while this replica was paused, or during a watch gap) the periodic relist removes.

Objects are kept as compact JSON text without `metadata.managedFields` (no reconcile reads them; they are
half of a Deployment's size) and parsed on each read: a reconcile may change what it reads, and no two
threads then share a dict.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from speculators_operator import constants as c
from speculators_operator.kube import Kube

log = logging.getLogger(__name__)

KINDS = ("Deployment", "Job", "Pod", "Service")  # what Kopf watches with our label selector
OURS = {c.LABEL_MANAGED_BY: c.OPERATOR_NAME}

_Key = tuple[str, str, str]  # (kind, namespace, name)


def _text(obj: Mapping[str, Any]) -> str:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return json.dumps({**obj, "metadata": meta}, separators=(",", ":"))


class _Entry:
    __slots__ = ("labels", "seq", "text")

    def __init__(self, labels: dict[str, str], text: str, seq: int) -> None:
        self.labels = labels
        self.text = text
        self.seq = seq


class ChildCache:
    def __init__(self, kinds: Iterable[str] = KINDS) -> None:
        self.kinds = frozenset(kinds)
        self._lock = threading.Lock()
        self._by_ns: dict[tuple[str, str], dict[str, _Entry]] = {}  # (kind, namespace) -> name -> entry
        self._gone: dict[_Key, int] = {}  # deletions seen since the last relist began (their seq)
        self._seq = 0  # counts every change, so a relist knows what the watches changed meanwhile
        self._synced: set[str] = set()

    # -- fed by the watches ------------------------------------------------------------------------

    def upsert(self, body: Mapping[str, Any]) -> None:
        kind = body.get("kind")
        if kind not in self.kinds:
            return
        meta = body.get("metadata") or {}
        text = _text(body)
        with self._lock:
            self._seq += 1
            key = (kind, meta.get("namespace", ""), meta.get("name", ""))
            self._gone.pop(key, None)
            self._by_ns.setdefault(key[:2], {})[key[2]] = _Entry(
                dict(meta.get("labels") or {}), text, self._seq
            )

    def remove(self, kind: str, namespace: str, name: str) -> None:
        if kind not in self.kinds:
            return
        with self._lock:
            self._seq += 1
            self._by_ns.get((kind, namespace), {}).pop(name, None)
            self._gone[(kind, namespace, name)] = self._seq

    # -- ground truth --------------------------------------------------------------------------------

    def relist(self, kube: Kube, namespaces: list[str] | None) -> None:
        """LIST each kind (our label) and merge: entries the watches changed during the LIST keep the
        watches' version; entries the LIST lacks and no watch touched meanwhile are dropped."""
        for kind in sorted(self.kinds):
            with self._lock:
                start = self._seq
            items: list[dict[str, Any]] = []
            for ns in namespaces or [None]:
                items += kube.list(kind, ns, OURS)
            listed: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
            for item in items:
                m = item["metadata"]
                listed.setdefault((kind, m.get("namespace", "")), {})[m["name"]] = item
            with self._lock:
                scopes = {s for s in self._by_ns if s[0] == kind} | set(listed)
                for scope in scopes:
                    cached = self._by_ns.setdefault(scope, {})
                    fresh = listed.get(scope, {})
                    for name in [n for n, e in cached.items() if n not in fresh and e.seq <= start]:
                        del cached[name]
                    for name, item in fresh.items():
                        entry = cached.get(name)
                        if entry is not None and entry.seq > start:
                            continue  # a watch event newer than the LIST
                        if self._gone.get((*scope, name), 0) > start:
                            continue  # deleted while the LIST ran
                        labels = dict(item["metadata"].get("labels") or {})
                        cached[name] = _Entry(labels, _text(item), entry.seq if entry else start)
                self._gone = {k: s for k, s in self._gone.items() if s > start}
                self._synced.add(kind)

    def unsync(self) -> None:
        """This replica stopped watching (peering paused it): read from the API server until relisted."""
        with self._lock:
            self._synced.clear()

    def synced(self, kind: str) -> bool:
        return kind in self._synced

    # -- reads ---------------------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._by_ns.get((kind, namespace), {}).get(name)
            text = entry.text if entry is not None else None
        return json.loads(text) if text is not None else None

    def list(
        self, kind: str, namespace: str, selector: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        wanted = list((selector or {}).items())
        with self._lock:
            texts = [
                e.text
                for e in self._by_ns.get((kind, namespace), {}).values()
                if all(e.labels.get(k) == v for k, v in wanted)
            ]
        return [json.loads(t) for t in texts]

    def size(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._by_ns.values())


class Reads:
    """get/list as Kube has them: from the cache where it is synced for the kind and the selector is
    within what the watches see (our label), else from the API server.

    A get the cache misses is an absent child: the watches see every object with our label, and the
    reconciles use a child only when their object controls it, which makes an unlabelled namesake "not
    ours" either way. Children that others create (KServe's Deployments) are read with Kube itself.
    """

    def __init__(self, kube: Kube, cache: ChildCache | None = None) -> None:
        self.kube = kube
        self.cache = cache

    def _cache_for(self, kind: str) -> ChildCache | None:
        cache = self.cache
        return cache if cache is not None and kind in cache.kinds and cache.synced(kind) else None

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        cache = self._cache_for(kind)
        return cache.get(kind, namespace, name) if cache else self.kube.get(kind, namespace, name)

    def list(self, kind: str, namespace: str, selector: dict[str, str] | None = None) -> list[dict[str, Any]]:
        cache = self._cache_for(kind)
        if cache and (selector or {}).get(c.LABEL_MANAGED_BY) == c.OPERATOR_NAME:
            return cache.list(kind, namespace, selector)
        return self.kube.list(kind, namespace, selector)
