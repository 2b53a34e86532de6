"""The choice of k (per load bucket) with hysteresis: a pure function of the measures and the last change.

Rules, in order:
- decide only on enough evidence: the k being served needs `minDrafts` drafts in the window (steps, for a
  bucket with speculation off);
- the best k maximises expected tokens per second (tuning.model). Beyond the largest measured k the rates
  are estimates, so a move up is an exploration: it goes to the estimated best at once, and afterwards
  every position below the new k is measured, so a correction (down) is exact — two rollouts to the best
  k (or to within minGain of it) when the traffic holds still;
- change only when the best beats the served k by `minGain` percent, and never within `cooldownSeconds`
  of the last change: rates that sit on a boundary cannot make k flap;
- while step times exist at one k only, the draft's cost ratio c is a prior: once (after a cooldown) the
  tuner probes a neighbouring k, so that c is measured before it settles (a block-parallel draft costs
  one pass at every k, so only a bucket that may switch speculation off probes, at k 0);
- an exploration or a probe was a guess, so the decision right after it settles on the measured best
  without the minGain margin (the caller passes min_gain 0 then); the margin guards every other change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from speculators_operator.tuning.model import Measure, StepCost, extend_rates, tokens_per_second

TUNED = "Tuned"
STABLE = "Stable"
COOLDOWN = "Cooldown"
WAITING = "WaitingForData"


@dataclass(frozen=True)
class Params:
    k_min: int = 1
    k_max: int = 8
    min_gain: float = 0.05  # fraction
    cooldown_seconds: float = 600.0
    min_drafts: float = 500.0
    allow_off: bool = False  # k = 0 (speculation off) is a candidate: load buckets only


@dataclass(frozen=True)
class Choice:
    k: int
    reason: str
    message: str
    expected_gain: float = 0.0  # T(k) / T(served) - 1
    expected_speedup: float | None = None  # T(k) / T(0)
    explored: bool = False  # k lies beyond every measured k

    @property
    def changed(self) -> bool:
        return self.reason == TUNED


def _evidence(current: int, measures: Sequence[Measure]) -> float:
    """Drafts measured at the served k (for k 0, the caller counts steps in `drafts`)."""
    return sum(m.drafts for m in measures if m.k == current)


def choose(
    current: int,
    bucket_measures: Sequence[Measure],
    rates: Sequence[float],
    cost: StepCost,
    params: Params,
    *,
    since_change: float | None,
    offline_cond: Sequence[float] = (),
    label: str = "",
) -> Choice:
    """The k to serve next in one bucket. `rates`: pooled live per-position rates (all buckets)."""
    where = f" ({label})" if label else ""
    evidence = _evidence(current, bucket_measures)
    if evidence < params.min_drafts:
        what = "steps" if current == 0 else "drafts"
        return Choice(
            current,
            WAITING,
            f"k={current}{where}: {evidence:.0f}/{params.min_drafts:.0f} {what} in the window",
        )
    full = extend_rates(rates, params.k_max, offline_cond)
    lo = 0 if params.allow_off else params.k_min
    candidates = [k for k in range(lo, params.k_max + 1) if k == 0 or k >= params.k_min]
    if current not in candidates:
        candidates.append(current)
    speed = {k: tokens_per_second(k, full, cost) for k in candidates}
    base = tokens_per_second(0, full, cost)
    best = max(candidates, key=lambda k: (speed[k], -abs(k - current), -k))
    gain = speed[best] / speed[current] - 1.0 if speed[current] > 0 else float("inf")
    speedup = speed[best] / base if base > 0 else None
    tail = f"expected speed-up {speed[current] / base:.3f} at k={current}" if base > 0 else ""
    cooled = since_change is None or since_change >= params.cooldown_seconds
    if best == current or gain < params.min_gain:
        probe: int | None = current - 1 if current - 1 >= lo else current + 1
        if cost.parallel:
            # A block-parallel draft costs the same pass at every k >= 1: only a window without
            # speculation (load buckets) measures it.
            probe = 0 if lo == 0 and current > 0 else None
        if (
            probe is not None
            and cost.source != "measured"
            and cost.a is not None
            and cooled
            and lo <= probe <= params.k_max
        ):
            # Step times at one k cannot tell the draft's cost from the verifier's (c is still a prior):
            # one window at a neighbouring k measures it, once, and then the choice stands on data.
            return Choice(
                probe,
                TUNED,
                f"k {current} → {probe}{where} (probing): a second k measures the draft's step cost "
                f"(c={cost.c:.3f} is a prior so far)",
                speed[probe] / speed[current] - 1.0 if probe in speed and speed[current] > 0 else 0.0,
                speed[probe] / base if probe in speed and base > 0 else None,
                explored=True,
            )
        note = "" if best == current else f"; k={best} would gain {100 * gain:.1f}% < minGain"
        return Choice(
            current, STABLE, f"k={current}{where} is best: {tail}{note}", 0.0, speed[current] / base
        )
    if not cooled:
        assert since_change is not None
        left = params.cooldown_seconds - since_change
        return Choice(
            current,
            COOLDOWN,
            f"k={current}{where}: k={best} would gain {100 * gain:.1f}%, cooldown has {left:.0f}s left",
            0.0,
            speed[current] / base,
        )
    explored = best > len(rates)  # rates are measured up to the largest k that ran
    verb = "exploring" if explored else "tuned"
    return Choice(
        best,
        TUNED,
        f"k {current} → {best}{where} ({verb}): expected +{100 * gain:.1f}% tokens/s, speed-up {speedup:.3f}"
        if speedup is not None
        else f"k {current} → {best}{where} ({verb}): expected +{100 * gain:.1f}% tokens/s",
        gain,
        speedup,
        explored,
    )


def best_fixed_k(rates: Sequence[float], cost: StepCost, params: Params) -> int:
    """Exhaustive search with the true rates (benchmarks compare the tuner against it)."""
    lo = 0 if params.allow_off else params.k_min
    ks = [k for k in range(lo, params.k_max + 1) if k == 0 or k >= params.k_min]
    return max(ks, key=lambda k: (tokens_per_second(k, rates, cost), -k))
