"""Expected decoding throughput at each k, from live per-position acceptance and measured step times.

A verifier step with k drafts costs  s(k) = a * (1 + c * k)  seconds: `a` is the verifier's own step, `c`
the draft pass relative to it. It yields L(k) = 1 + p_0 + ... + p_{k-1} tokens (speculators_core.eval.cost),
so a request decodes at  T(k) = L(k) / s(k)  tokens per second, and T(0) = 1 / a without speculation.
A block-parallel draft (DFlash) drafts its whole block in one pass, so its step costs s(k) = a * (1 + c)
for every k >= 1: its k only decides how much of the block the verifier checks, and the fit below is in
the number of draft passes per step (0 or 1) instead of k.

vLLM 0.33 observes `vllm:inter_token_latency_seconds` once per request per engine step (however many
tokens the step produced), so its mean over a window is s(k) at the k that ran. Windows at two or more k
fit a and c by least squares; with one, c stays at its prior (the draft/verifier cost ratio of the
training's evaluation, or spec.tuning.draftCostRatio) and only a is measured.

Positions at or beyond the largest measured k have no counters. Their conditional rates are estimated as
the last measured conditional rate (a geometric tail), lowered to the offline evaluation's shape where the
training measured those positions; the chooser then moves at most one step beyond what was measured, so
an optimistic estimate costs one cooldown at worst and is replaced by a measurement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from speculators_core.eval.cost import (
    acceptance_length_by_k,
    conditional_rates,
    per_position_from_conditional,
)

DEFAULT_COST_RATIO = 0.05  # a one-layer EAGLE-3 draft over an 8B verifier: about 1/20 of a step


@dataclass(frozen=True)
class Measure:
    """One window of one k (in one load bucket): the counters' increases and the mean step time."""

    k: int
    drafts: float
    accepted_per_pos: tuple[float, ...]  # accepted at position i, i < k
    step_seconds: float | None = None  # mean inter-token latency = mean step time


def pooled_rates(measures: Sequence[Measure]) -> list[float]:
    """p_i over every window that drafted position i (windows at a smaller k never reach it)."""
    top = max((m.k for m in measures if m.drafts > 0), default=0)
    out = []
    for i in range(top):
        drafts = sum(m.drafts for m in measures if m.k > i and m.drafts > 0)
        accepted = sum(
            m.accepted_per_pos[i]
            for m in measures
            if m.k > i and m.drafts > 0 and i < len(m.accepted_per_pos)
        )
        out.append(min(1.0, max(0.0, accepted / drafts)) if drafts > 0 else 0.0)
    return out


def extend_rates(measured: Sequence[float], k_max: int, offline_cond: Sequence[float] = ()) -> list[float]:
    """Per-position rates up to k_max: measured ones, then an estimated tail (see the module doc)."""
    if len(measured) >= k_max:
        return list(measured[:k_max])
    cond = conditional_rates(measured)
    if not cond:
        # Nothing measured: the offline evaluation's shape, else nothing accepted.
        cond = list(offline_cond[:k_max]) or [0.0]
    last = cond[-1]
    m = len(cond)
    while len(cond) < k_max:
        j = len(cond)
        estimate = last
        if j < len(offline_cond) and m - 1 < len(offline_cond) and offline_cond[m - 1] > 0:
            # Offline shape, scaled to live at the last measured position; never above the last live rate.
            estimate = min(last, offline_cond[j] * last / offline_cond[m - 1])
        cond.append(max(0.0, min(1.0, estimate)))
    return per_position_from_conditional(cond)


def draft_passes(k: int, parallel: bool) -> int:
    """Draft forward passes per verifier step at k: k sequential ones, or one block (0 without drafts)."""
    return min(k, 1) if parallel else k


@dataclass(frozen=True)
class StepCost:
    """s(k) = a * (1 + c * passes(k)); a is None when no step time was measured (then T is relative to a)."""

    a: float | None
    c: float
    source: str  # measured (fit over several k) | prior
    parallel: bool = False  # block-parallel drafting (DFlash): one draft pass per step at any k

    def seconds(self, k: int) -> float:
        return (self.a or 1.0) * (1.0 + self.c * draft_passes(k, self.parallel))


def fit_step_cost(
    points: Sequence[tuple[int, float, float]], prior_c: float, *, parallel: bool = False
) -> StepCost:
    """Fit a, c to (k, mean step seconds, weight) points; several distinct numbers of draft passes are
    needed to measure c (for a block-parallel draft: windows with and without speculation)."""
    pts = [(draft_passes(k, parallel), s, w) for k, s, w in points if s > 0 and w > 0]
    if not pts:
        return StepCost(None, prior_c, "prior", parallel)
    ks = {k for k, _, _ in pts}
    if len(ks) >= 2:
        wsum = sum(w for _, _, w in pts)
        mk = sum(w * k for k, _, w in pts) / wsum
        ms = sum(w * s for _, s, w in pts) / wsum
        var = sum(w * (k - mk) ** 2 for k, _, w in pts)
        slope = sum(w * (k - mk) * (s - ms) for k, s, w in pts) / var
        a = ms - slope * mk
        if a > 0:
            return StepCost(a, min(2.0, max(0.0, slope / a)), "measured", parallel)
    # One k (or a fit that makes no physical sense): measure a at the prior c.
    wsum = sum(w for _, _, w in pts)
    a = sum(w * s / (1.0 + prior_c * k) for k, s, w in pts) / wsum
    return StepCost(a, prior_c, "prior", parallel)


def tokens_per_second(k: int, rates: Sequence[float], cost: StepCost) -> float:
    """T(k); relative units (per verifier step) when a is unknown."""
    if k <= 0:
        return 1.0 / cost.seconds(0)
    length = acceptance_length_by_k(rates[:k])[-1] if rates else 1.0  # positions past the rates: none
    return length / cost.seconds(k)


def speedup(k: int, rates: Sequence[float], cost: StepCost) -> float:
    """T(k) / T(0): the expected speed-up over the verifier alone."""
    return tokens_per_second(k, rates, cost) / tokens_per_second(0, rates, cost)
