"""The child cache: what the watches and the relists leave in it, and where reads go before it is synced.

The relist races (a watch event or a deletion arriving while the LIST runs) cannot be timed against a real
API server, so `ListingStandIn` (a stand-in for the API server's LIST, named as such) answers the LIST
and lets the test deliver watch events in the middle of it. The whole operator reads through this cache
in every cluster test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from speculators_operator import constants as c
from speculators_operator.cache import OURS, ChildCache, Reads


def obj(kind: str, name: str, version: str = "1", ns: str = "ns", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": ns, "resourceVersion": version, "labels": {**OURS, **labels}},
    }


class ListingStandIn:
    """Stand-in for the API server's LIST (and GET, counted): `during` runs while a LIST is answered."""

    def __init__(self, items: dict[str, list[dict[str, Any]]]) -> None:
        self.items = items
        self.during: Callable[[], None] | None = None
        self.gets = 0

    def list(self, kind: str, namespace: str | None, selector: dict[str, str] | None = None) -> list[Any]:
        answer = [dict(i) for i in self.items.get(kind, [])]
        if self.during is not None:
            during, self.during = self.during, None
            during()
        return answer

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets += 1
        return next((i for i in self.items.get(kind, []) if i["metadata"]["name"] == name), None)


def test_relist_adds_and_drops_what_the_watches_missed():
    cache = ChildCache()
    cache.upsert(obj("Deployment", "phantom"))  # deleted during a watch gap: no DELETED event came
    api = ListingStandIn({"Deployment": [obj("Deployment", "a")], "Pod": [obj("Pod", "p", app="x")]})
    cache.relist(api, None)  # type: ignore[arg-type]
    assert cache.get("Deployment", "ns", "phantom") is None
    assert cache.get("Deployment", "ns", "a")["metadata"]["resourceVersion"] == "1"
    assert [p["metadata"]["name"] for p in cache.list("Pod", "ns", {"app": "x"})] == ["p"]
    assert cache.list("Pod", "ns", {"app": "y"}) == []
    assert all(cache.synced(k) for k in ("Deployment", "Job", "Pod", "Service"))


def test_watch_events_during_a_relist_win_over_its_older_answer():
    cache = ChildCache(kinds=["Deployment"])
    cache.upsert(obj("Deployment", "updated", "1"))
    cache.upsert(obj("Deployment", "deleted", "1"))
    api = ListingStandIn(
        {"Deployment": [obj("Deployment", "updated", "1"), obj("Deployment", "deleted", "1")]}
    )

    def events_while_listing() -> None:
        cache.upsert(obj("Deployment", "updated", "2"))
        cache.remove("Deployment", "ns", "deleted")
        cache.upsert(obj("Deployment", "created", "3"))  # after the LIST's snapshot

    api.during = events_while_listing
    cache.relist(api, None)  # type: ignore[arg-type]
    assert cache.get("Deployment", "ns", "updated")["metadata"]["resourceVersion"] == "2"
    assert cache.get("Deployment", "ns", "deleted") is None
    assert cache.get("Deployment", "ns", "created") is not None


def test_reads_go_to_the_api_server_until_synced_and_after_a_pause():
    cache = ChildCache()
    api = ListingStandIn({"Service": [obj("Service", "s")]})
    reads = Reads(api, cache)  # type: ignore[arg-type]
    assert reads.get("Service", "ns", "s") is not None and api.gets == 1
    cache.relist(api, None)  # type: ignore[arg-type]
    assert reads.get("Service", "ns", "s") is not None and api.gets == 1  # from the cache now
    assert reads.get("Service", "ns", "absent") is None and api.gets == 1  # a miss is trusted
    got = reads.get("Service", "ns", "s")
    got["metadata"]["name"] = "changed by a reconcile"
    assert reads.get("Service", "ns", "s")["metadata"]["name"] == "s"  # every read is its own copy
    cache.unsync()  # another replica became active: Kopf paused our watches
    assert reads.get("Service", "ns", "s") is not None and api.gets == 2
    # Kinds the watches do not see, and selectors wider than our label, always ask the API server.
    assert reads.get("PersistentVolumeClaim", "ns", "x") is None and api.gets == 3


def test_list_without_our_label_is_not_served_from_the_cache():
    cache = ChildCache()
    api = ListingStandIn({"Pod": [obj("Pod", "p")]})
    cache.relist(api, None)  # type: ignore[arg-type]
    calls: list[dict[str, str] | None] = []
    original = api.list

    def counting(kind: str, namespace: str | None, selector: dict[str, str] | None = None) -> list[Any]:
        calls.append(selector)
        return original(kind, namespace, selector)

    api.list = counting  # type: ignore[method-assign]
    reads = Reads(api, cache)  # type: ignore[arg-type]
    assert len(reads.list("Pod", "ns", {c.LABEL_MANAGED_BY: c.OPERATOR_NAME})) == 1 and calls == []
    reads.list("Pod", "ns", {"app": "x"})
    assert calls == [{"app": "x"}]
