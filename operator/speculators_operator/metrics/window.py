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
from dataclasses import dataclass, field

from speculators_operator.metrics.acceptance import Counters


@dataclass(frozen=True)
class Point:
    t: float
    counters: Counters
    instance: str
    started_at: float | None  # start of the container that produced this point


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
        self, pod: str, t: float, counters: Counters, *, instance: str = "", started_at: float | None = None
    ) -> None:
        series = self.pods.setdefault(pod, PodSeries())
        if series.points and t <= series.points[-1].t:
            return  # out of order or duplicate
        series.points.append(Point(t, counters, instance, started_at))
        self._trim(t)

    def _trim(self, now: float) -> None:
        start = now - self.window
        for pod in list(self.pods):
            points = self.pods[pod].points
            while len(points) >= 2 and points[1].t <= start:
                points.popleft()  # keep exactly one point at or before the window start
            if points and points[-1].t < start:
                del self.pods[pod]  # gone for a whole window: nothing of it is left to count

    def increase(self, now: float) -> tuple[Counters, int]:
        """(sum of increases over [now - window, now], number of pods that contributed)."""
        self._trim(now)
        start = now - self.window
        total = Counters()
        contributing = 0
        for series in self.pods.values():
            points = list(series.points)
            if not points:
                continue
            first = points[0]
            delta = Counters()
            if first.t > start and first.started_at is not None and first.started_at >= start:
                # The container started inside the window: its counters began at zero then.
                delta = delta.plus(first.counters)
            for prev, cur in itertools.pairwise(points):
                step = cur.counters if _reset_between(prev, cur) else cur.counters.minus(prev.counters)
                delta = delta.plus(step)
            if len(points) > 1 or delta.drafts > 0:
                contributing += 1
            total = total.plus(delta)
        return total, contributing

    def has_data(self) -> bool:
        return any(s.points for s in self.pods.values())
