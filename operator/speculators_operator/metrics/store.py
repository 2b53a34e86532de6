"""In-memory acceptance state per Speculator, fed by the scrape loop and read by the reconciler.

Only the reconciler writes status, so scrapes never race it on `conditions[]`: the loop records what it
saw here and asks for a reconcile. The state is memory only: after an operator restart the status keeps
its last values until a new window has data.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from speculators_core.vllm_metrics.acceptance import Counters, summarize
from speculators_operator.metrics.scraper import ScrapeResult
from speculators_operator.metrics.window import AcceptanceWindow

Key = tuple[str, str]  # (namespace, name)


def canary_key(key: Key) -> Key:
    """Where the canary pods' window is kept ('/' never occurs in a name)."""
    return (key[0], f"{key[1]}/canary")


MeasureKey = tuple[int, int]  # (load bucket index, k)


def bucket_of(running: float, bounds: tuple[int, ...]) -> int:
    """Index of the load bucket of a running batch size: bounds are inclusive upper ends, ascending."""
    size = max(1, round(running))
    for i, bound in enumerate(bounds):
        if size <= bound:
            return i
    return len(bounds)


def k_of(plan: Any, running: float) -> int | None:
    """The k a pod drafted at this batch size (its plan is a k or vLLM's batch-size schedule)."""
    if isinstance(plan, int):
        return plan
    if isinstance(plan, tuple) and plan:
        size = max(1, round(running))
        k = plan[0][2]
        for lo, _, value in sorted(plan):
            if size >= lo:
                k = value  # vLLM carries a range's k forward over gaps and past the last range
        return k
    return None


def measure_key(bounds: tuple[int, ...]) -> Any:
    def key(plan: Any, running: float) -> MeasureKey | None:
        k = k_of(plan, running)
        return None if k is None else (bucket_of(running, bounds), k)

    return key


@dataclass
class AcceptanceState:
    """What the last scrape/query of one Speculator gave."""

    window: AcceptanceWindow
    source: str = "pods"
    summary: dict[str, Any] | None = None  # status.acceptance without lastScrapeTime
    targets: int = 0  # ready pods scraped
    errors: list[str] = field(default_factory=list)
    failed_in_a_row: int = 0  # consecutive scrapes/queries that measured nothing (every target failed)
    scraped_at: float | None = None
    # Window increases per (load bucket, k), for the choice of k (spec.tuning).
    measures: dict[MeasureKey, Counters] = field(default_factory=dict)


class MetricsStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[Key, AcceptanceState] = {}

    def _entry(self, key: Key, window_seconds: int, source: str) -> AcceptanceState:
        state = self._state.get(key)
        if state is None or state.window.window != float(window_seconds) or state.source != source:
            state = AcceptanceState(window=AcceptanceWindow(window_seconds), source=source)
            self._state[key] = state
        return state

    def record_scrape(
        self,
        key: Key,
        window_seconds: int,
        results: list[ScrapeResult],
        now: float,
        buckets: tuple[int, ...] = (),
    ) -> AcceptanceState:
        with self._lock:
            state = self._entry(key, window_seconds, "pods")
            for res in results:
                if res.counters is not None:
                    state.window.observe(
                        res.target.pod,
                        now,
                        res.counters,
                        instance=res.target.instance,
                        started_at=res.target.started_at,
                        plan=res.target.plan,
                    )
            state.targets = len(results)
            state.errors = [r.error for r in results if r.error]
            state.failed_in_a_row = (
                state.failed_in_a_row + 1 if state.errors and len(state.errors) >= len(results) else 0
            )
            state.scraped_at = now
            if state.window.has_data():
                delta, pods = state.window.increase(now)
                state.summary = summarize(delta, window_seconds=window_seconds, pods=pods, source="pods")
                state.measures = state.window.increase_by(now, measure_key(buckets))
            else:
                state.window.increase(now)  # ages out pods that are gone
                state.summary = None
                state.measures = {}
            return state

    def record_query(
        self,
        key: Key,
        window_seconds: int,
        delta: Counters | None,
        pods: int,
        now: float,
        error: str | None = None,
    ) -> AcceptanceState:
        with self._lock:
            state = self._entry(key, window_seconds, "prometheus")
            state.scraped_at = now
            state.errors = [error] if error else []
            state.failed_in_a_row = state.failed_in_a_row + 1 if error else 0
            state.targets = pods
            if delta is not None:
                state.summary = summarize(
                    delta, window_seconds=window_seconds, pods=pods, source="prometheus"
                )
            return state

    def get(self, key: Key) -> AcceptanceState | None:
        with self._lock:
            return self._state.get(key)

    def forget(self, key: Key) -> None:
        with self._lock:
            self._state.pop(key, None)
