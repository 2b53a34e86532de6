"""Sliding-window increases of per-pod counters, with counter resets handled like Prometheus increase().

Each pod's samples are kept for the window (plus one sample before it, the baseline). The increase over
the window is the sum of the positive steps between consecutive samples; a step across a restart (the
container instance changed, a *_created timestamp moved, or any counter went down) counts the new value
from zero instead of a negative difference. A pod whose container started inside the window gets an
implicit zero sample at its start, so its traffic counts from the first scrape; a pod that started
earlier needs two scrapes (its pre-window history is not ours to count).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from speculators_core.vllm_metrics.acceptance import Counters

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Point:
    t: float
    counters: Counters
    instance: str
    started_at: float | None  # start of the container that produced this point
    plan: Any = None  # what the pod was told to draft (k, or a batch-size schedule): tuning's key


@dataclass
class PodSeries:
    points: deque[Point] = field(default_factory=deque)


def _reset_between(prev: Point, cur: Point) -> bool:
    if prev.instance != cur.instance:
        return True
    a, b = prev.counters.created, cur.counters.created
    if a is not None and b is not None and abs(a - b) > 1e-3:
        return True
    return cur.counters.went_backwards(prev.counters)


class AcceptanceWindow:
    """Per-pod counter history of one Speculator, and its increase over the last `window` seconds."""

    def __init__(self, window_seconds: float) -> None:
        self.window = float(window_seconds)
        self.pods: dict[str, PodSeries] = {}

    def observe(
        self,
        pod: str,
        t: float,
        counters: Counters,
        *,
        instance: str = "",
        started_at: float | None = None,
        plan: Any = None,
    ) -> None:
        series = self.pods.setdefault(pod, PodSeries())
        if series.points and t <= series.points[-1].t:
            return  # out of order or duplicate
        series.points.append(Point(t, counters, instance, started_at, plan))
        self._trim(t)

    def _trim(self, now: float) -> None:
        start = now - self.window
        for pod in list(self.pods):
            points = self.pods[pod].points
            while len(points) >= 2 and points[1].t <= start:
                points.popleft()  # keep exactly one point at or before the window start
            if points and points[-1].t < start:
                del self.pods[pod]  # gone for a whole window: nothing of it is left to count

    def _steps(self, now: float) -> Iterator[tuple[int, Any, float, Counters, bool]]:
        """(pod index, plan, mean running batch, increase, between two scrapes) of every step in the
        window; a container started inside it adds a first step from zero."""
        self._trim(now)
        start = now - self.window
        for index, series in enumerate(self.pods.values()):
            points = list(series.points)
            if not points:
                continue
            first = points[0]
            if first.t > start and first.started_at is not None and first.started_at >= start:
                # The container started inside the window: its counters began at zero then.
                yield index, first.plan, first.counters.running, first.counters, False
            for prev, cur in itertools.pairwise(points):
                step = cur.counters if _reset_between(prev, cur) else cur.counters.minus(prev.counters)
                yield index, cur.plan, (prev.counters.running + cur.counters.running) / 2, step, True

    def increase(self, now: float) -> tuple[Counters, int]:
        """(sum of increases over [now - window, now], number of pods that contributed)."""
        total = Counters()
        pods = set()
        for index, _, _, step, paired in self._steps(now):
            total = total.plus(step)
            if paired or step.drafts > 0:  # two scrapes, or a start inside the window with traffic
                pods.add(index)
        return total, len(pods)

    def increase_by(self, now: float, key: Callable[[Any, float], K | None]) -> dict[K, Counters]:
        """Increases grouped by key(plan, running batch) of each step (None: left out)."""
        out: dict[K, Counters] = {}
        for _, plan, running, step, _ in self._steps(now):
            k = key(plan, running)
            if k is not None:
                out[k] = out.get(k, Counters()).plus(step)
        return out

    def has_data(self) -> bool:
        return any(s.points for s in self.pods.values())
