"""The small mechanics of reconciling: merge patches, condition times, the per-object runner."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from speculators_operator.handlers.runner import KeyedRunner
from speculators_operator.status.conditions import Cond, aggregate, merge
from speculators_operator.status.patch import merge_patch


def test_merge_patch_sends_only_changes_and_nulls_removed_keys():
    old = {
        "phase": "Running",
        "url": "http://x",
        "acceptance": {"acceptanceRate": 0.5, "drafts": 10},
        "conditions": [{"type": "Ready"}],
    }
    new = {"phase": "Running", "acceptance": {"drafts": 12}, "conditions": [{"type": "Ready"}]}
    assert merge_patch(old, new) == {"url": None, "acceptance": {"acceptanceRate": None, "drafts": 12}}
    assert merge_patch(new, new) == {}
    assert merge_patch(None, {"phase": "Pending"}) == {"phase": "Pending"}


def test_conditions_keep_transition_time_and_ready_aggregates():
    old = merge(None, [Cond("A", "True", "Ok"), Cond("B", "Unknown", "Waiting")], 1, "t1")
    new = merge(old, [Cond("A", "True", "Ok", "new message"), Cond("B", "False", "Broke")], 2, "t2")
    assert new[0]["lastTransitionTime"] == "t1" and new[0]["observedGeneration"] == 2
    assert new[1]["lastTransitionTime"] == "t2"
    assert aggregate([Cond("A", "True", "Ok"), Cond("B", "Unknown", "Waiting", "w")]) == Cond(
        "Ready", "Unknown", "Waiting", "B: w"
    )
    assert aggregate([Cond("A", "Unknown", "W"), Cond("B", "False", "Broke", "b")]).status == "False"
    assert aggregate([Cond("A", "True", "Ok")], ready_reason="Running").reason == "Running"


def test_runner_serialises_and_coalesces_triggers():
    calls: list[tuple[str, str, str]] = []
    running = threading.Lock()
    overlaps = []

    def reconcile(kind: str, ns: str, name: str) -> None:
        if not running.acquire(blocking=False):
            overlaps.append(name)
            return
        try:
            calls.append((kind, ns, name))
            time.sleep(0.05)
        finally:
            running.release()

    async def scenario() -> None:
        runner = KeyedRunner(reconcile)
        key = ("Speculator", "ns", "a")
        for _ in range(20):
            runner.trigger(key)
        await asyncio.sleep(0.01)
        for _ in range(20):
            runner.trigger(key)  # while the first run is in progress: one more run, not twenty
        await runner.run_now(key)
        await runner.idle()

    asyncio.run(scenario())
    assert overlaps == []
    assert 2 <= len(calls) <= 3


def test_runner_retries_failures_with_backoff():
    attempts = []

    def reconcile(kind: str, ns: str, name: str) -> None:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise RuntimeError("API server hiccup")

    async def scenario() -> None:
        runner = KeyedRunner(reconcile, backoff=(0.01, 0.02))
        runner.trigger(("SpeculatorTraining", "ns", "t"))
        await runner.idle()

    asyncio.run(scenario())
    assert len(attempts) == 3


def test_runner_lets_applied_objects_pass_background_work():
    """With every worker busy, a create/update (run_now) goes before triggers that were queued first."""
    order: list[str] = []
    release = threading.Event()

    def reconcile(kind: str, ns: str, name: str) -> None:
        if name == "busy":
            release.wait(5)
        order.append(name)

    async def scenario() -> None:
        runner = KeyedRunner(reconcile, workers=1)
        runner.trigger(("Speculator", "ns", "busy"))
        await asyncio.sleep(0.05)  # "busy" holds the only worker
        for name in ("child-event-1", "child-event-2"):
            runner.trigger(("Speculator", "ns", name))
        await asyncio.sleep(0.01)
        applied = asyncio.create_task(runner.run_now(("Speculator", "ns", "just-applied")))
        await asyncio.sleep(0.01)
        release.set()
        await applied
        await runner.idle()

    asyncio.run(scenario())
    assert order == ["busy", "just-applied", "child-event-1", "child-event-2"]


def test_run_now_propagates_errors_to_kopf():
    def reconcile(kind: str, ns: str, name: str) -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        asyncio.run(KeyedRunner(reconcile).run_now(("Speculator", "ns", "x")))


def test_peering_rule_matches_kopf():
    from datetime import UTC, datetime

    from speculators_operator.handlers.peering import blocking_peers

    now = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    status = {
        "me": {"priority": 0, "lifetime": 60, "lastseen": "2026-01-01T00:00:30+00:00"},
        "higher": {"priority": 10, "lifetime": 60, "lastseen": "2026-01-01T00:00:30+00:00"},
        "dead-higher": {"priority": 10, "lifetime": 60, "lastseen": "2025-12-31T23:00:00+00:00"},
        "lower": {"priority": -5, "lifetime": 60, "lastseen": "2026-01-01T00:00:30+00:00"},
        "same": {"priority": 0, "lifetime": 60, "lastseen": "2026-01-01T00:00:59+00:00"},
    }
    assert sorted(blocking_peers(status, "me", 0, now)) == ["higher", "same"]
    assert blocking_peers(status, "higher", 10, now) == []


class RecordingKube:
    """Stand-in for the API server in one case the real one cannot produce on demand: an object stored
    under an older, looser CRD, which no longer renders. It returns that object and records writes."""

    def __init__(self, body: dict) -> None:
        self.body = body
        self.status_patches: list[dict] = []
        self.events: list[tuple[str, str, str]] = []

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        return self.body if kind == self.body["kind"] and name == self.body["metadata"]["name"] else None

    def list(self, *args: object, **kwargs: object) -> list:
        return []

    def serves(self, kind: str) -> bool:
        return False

    def patch_status(self, kind: str, namespace: str, name: str, patch: dict) -> dict:
        self.status_patches.append(patch)
        return self.body

    def post_event(self, owner: dict, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


def test_a_spec_the_renderer_refuses_is_invalid_spec_in_status_and_an_event():
    from spd_testlib import speculator

    from speculators_operator.handlers.reconcile import Reconciler, SemanticError
    from speculators_operator.metrics.store import MetricsStore

    body = speculator("old", method="eagle3", numSpeculativeTokens=3)
    body["spec"]["verifier"]["uri"] = "hf://org/na--me"  # admitted before the CRD refused '--'
    kube = RecordingKube(body)
    reconciler = Reconciler(kube, MetricsStore())  # type: ignore[arg-type]
    with pytest.raises(SemanticError) as info:
        reconciler("Speculator", "ns", "old")
    assert info.value.reason == "InvalidSpec"
    (patch,) = kube.status_patches
    ready = next(c for c in patch["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "is not a Hugging Face repo id" in ready["message"] and patch["phase"] == "Failed"
    assert [(t, r) for t, r, _ in kube.events] == [("Warning", "InvalidSpec")]
    # The same error again: no new status write, no second Event (backoff retries stay quiet).
    body["status"] = {**patch}
    with pytest.raises(SemanticError):
        reconciler("Speculator", "ns", "old")
    assert len(kube.status_patches) == 1 and len(kube.events) == 1


def test_an_apply_that_would_change_nothing_is_skipped():
    """A child applied before and observed at the version that apply returned, or with only its status
    moved on since (same generation, our labels on it): the same apply is not sent again. Drift of what we
    own (another version of a kind without a generation, a new generation, a removed label) is applied
    over; so is a new render."""
    from speculators_operator.handlers.reconcile import Reconciler
    from speculators_operator.metrics.store import MetricsStore
    from speculators_operator.status.plan import Plan

    class ApiServerStandIn:  # returns what an apply returns: the new resourceVersion and generation
        def __init__(self) -> None:
            self.applied: list[str] = []

        def apply(self, obj):
            self.applied.append(f"{obj['kind']}:{obj['spec']['v']}")
            return {"metadata": {"resourceVersion": str(len(self.applied)), "generation": 1}}

        def patch_status(self, *args):
            pass

    kube = ApiServerStandIn()
    reconciler = Reconciler(kube, MetricsStore())  # type: ignore[arg-type]
    owner = {"kind": "Speculator", "metadata": {"namespace": "ns", "name": "s"}, "status": {}}

    def child(kind: str, v: str) -> dict:
        meta = {"namespace": "ns", "name": "s", "labels": {"ours": "yes"}}
        return {"kind": kind, "metadata": meta, "spec": {"v": v}}

    def live(kind: str, version: str, generation: int | None = None, labels: dict | None = None) -> dict:
        meta = {
            "name": "s",
            "resourceVersion": version,
            "labels": {"ours": "yes"} if labels is None else labels,
        }
        if generation is not None:
            meta["generation"] = generation
        return {(kind, "s"): {"kind": kind, "metadata": meta}}

    def execute(kind: str, v: str, observed: dict) -> None:
        reconciler.execute(owner, Plan(status={}, apply=[child(kind, v)]), observed)

    execute("Service", "a", {})
    execute("Service", "a", live("Service", "1"))
    assert kube.applied == ["Service:a"]  # observed at the version our apply returned: skipped
    execute("Service", "a", live("Service", "7"))
    assert kube.applied == ["Service:a"] * 2  # no generation, another version: applied over
    execute("Service", "b", live("Service", "2"))
    assert kube.applied == ["Service:a"] * 2 + ["Service:b"]  # a new render

    kube.applied.clear()
    execute("Deployment", "a", {})  # returns version 1, generation 1
    execute("Deployment", "a", live("Deployment", "9", generation=1))
    assert kube.applied == ["Deployment:a"]  # only its status moved (the rollout): skipped
    execute("Deployment", "a", live("Deployment", "10", generation=1, labels={}))
    assert kube.applied == ["Deployment:a"] * 2  # our label was removed: applied over
    execute("Deployment", "a", live("Deployment", "11", generation=2))
    assert kube.applied == ["Deployment:a"] * 3  # someone changed its spec: applied over
