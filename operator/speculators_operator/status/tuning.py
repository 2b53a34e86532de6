"""Automatic k for a Speculator (spec.tuning.mode auto): from the live window and status.tuning to the k
(or batch-size schedule) to serve next, the Tuned condition and status.tuning. Pure.

Only observed state decides: the scrapes' per-(bucket, k) increases, and status.tuning's observations
and last change, which carry what earlier windows measured across rollouts and operator restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from speculators_core.eval.cost import expected_speedup
from speculators_core.serving import PARALLEL_DRAFTING
from speculators_core.vllm_metrics.acceptance import Counters
from speculators_operator.api.speculator import SpeculatorSpec
from speculators_operator.status.conditions import Cond, parse_time
from speculators_operator.status.plan import Event
from speculators_operator.tuning import choose as chooser
from speculators_operator.tuning.model import DEFAULT_COST_RATIO, Measure, fit_step_cost, pooled_rates

MAX_BATCH = 65536  # upper end of the last bucket (vLLM clamps to max_num_seqs)
Schedule = tuple[tuple[int, int, int], ...]


@dataclass
class Tuning:
    k: int
    schedule: Schedule | None = None
    status: dict[str, Any] | None = None
    condition: Cond | None = None
    events: list[Event] = field(default_factory=list)


def bucket_ranges(bounds: list[int]) -> list[tuple[int, int]]:
    """[4, 16] -> [(1, 4), (5, 16), (17, MAX_BATCH)]."""
    out, lo = [], 1
    for bound in bounds:
        out.append((lo, bound))
        lo = bound + 1
    out.append((lo, MAX_BATCH))
    return out


def _offline(training: dict[str, Any] | None) -> dict[str, Any]:
    return ((training or {}).get("status") or {}).get("evaluation") or {}


def k_range(spec: SpeculatorSpec, draft_k: int, parallel: bool, limit: int | None = None) -> tuple[int, int]:
    """spec.tuning's [min, max], never beyond what the draft can propose per step (`limit`: a DFlash
    block's block_size - 1; vLLM refuses more). A block-parallel draft whose limit is unknown stays at
    or below its own k; a sequential one may draft past the k it was trained for."""
    t = spec.tuning
    top = t.max
    if limit:
        top = min(top, limit)
    elif parallel:
        top = min(top, draft_k)
    return min(t.min, top), top


def start_k(
    spec: SpeculatorSpec,
    draft_k: int,
    training: dict[str, Any] | None,
    cost_ratio: float,
    parallel: bool = False,
    limit: int | None = None,
) -> int:
    """No live data yet: spec's k, else the best k of the training's evaluation, else the draft's."""
    lo, hi = k_range(spec, draft_k, parallel, limit)
    if spec.num_speculative_tokens is not None:
        return spec.num_speculative_tokens
    evaluation = _offline(training)
    table = evaluation.get("acceptanceLengthByK") or []
    if table:
        ks = range(lo, min(hi, len(table)) + 1)
        if ks:
            return max(
                ks, key=lambda k: (expected_speedup(table[k - 1], k, cost_ratio, parallel=parallel), -k)
            )
    return min(hi, max(lo, draft_k))


def _observation(bucket: int, k: int, delta: Counters, now: str) -> dict[str, Any] | None:
    steps = delta.itl_count
    step = delta.itl_sum / steps if steps > 0 else None
    if k == 0:
        if steps <= 0:
            return None
        return {
            "bucket": bucket,
            "k": 0,
            "drafts": round(steps),
            "stepSeconds": round(step or 0, 6),
            "time": now,
        }
    if delta.drafts <= 0:
        return None
    per_pos = [round(max(0.0, delta.per_pos.get(i, 0.0)) / delta.drafts, 4) for i in range(k)]
    out: dict[str, Any] = {"bucket": bucket, "k": k, "drafts": round(delta.drafts), "perPosition": per_pos}
    if step is not None:
        out["stepSeconds"] = round(step, 6)
    out["time"] = now
    return out


def merge_observations(
    stored: list[dict[str, Any]], live: dict[tuple[int, int], Counters], now: str, min_drafts: int
) -> list[dict[str, Any]]:
    """Live windows replace stored ones of the same (bucket, k) once they hold enough evidence (or when
    nothing was stored)."""
    by_key = {(o.get("bucket", 0), o.get("k")): o for o in stored}
    for (bucket, k), delta in sorted(live.items()):
        obs = _observation(bucket, k, delta, now)
        if obs is None:
            continue
        old = by_key.get((bucket, k))
        if old is None or obs["drafts"] >= min_drafts or obs["drafts"] >= old.get("drafts", 0):
            by_key[(bucket, k)] = obs
    return [by_key[key] for key in sorted(by_key)]


def _stale(stored: list[dict[str, Any]], fresh: list[dict[str, Any]], now: str, window: float) -> bool:
    """A (bucket, k) is measured that status does not hold yet, or what it holds is a window old."""
    keys = {(o.get("bucket", 0), o.get("k")) for o in stored}
    if any((o.get("bucket", 0), o.get("k")) not in keys for o in fresh):
        return True
    t_now = parse_time(now) or 0.0
    return any(t_now - (parse_time(o.get("time")) or 0.0) >= window for o in stored) and fresh != stored


def _measure(obs: dict[str, Any]) -> Measure:
    drafts = float(obs.get("drafts") or 0)
    return Measure(
        k=int(obs["k"]),
        drafts=drafts,
        accepted_per_pos=tuple(float(p) * drafts for p in obs.get("perPosition") or []),
        step_seconds=obs.get("stepSeconds"),
    )


def _prior_cost(spec: SpeculatorSpec, training: dict[str, Any] | None) -> tuple[float, str]:
    if spec.tuning.draft_cost_ratio is not None:
        return spec.tuning.draft_cost_ratio, "spec"
    ratio = _offline(training).get("draftCostRatio")
    if isinstance(ratio, int | float) and ratio > 0:
        return float(ratio), "evaluation"
    return DEFAULT_COST_RATIO, "default"


def tune(
    spec: SpeculatorSpec,
    draft_uri: str,
    draft_k: int,
    previous: dict[str, Any] | None,
    live: dict[tuple[int, int], Counters] | None,
    training: dict[str, Any] | None,
    now: str,
    window_seconds: float = 300.0,
    method: str = "eagle3",
    k_limit: int | None = None,
) -> Tuning:
    """The k (and schedule) to serve for a draft under spec.tuning. `method`: the served draft's (a
    block-parallel one, DFlash, costs one draft pass per step at any k); `k_limit`: the most tokens the
    draft proposes per step, when known."""
    t = spec.tuning
    if t.mode != "auto":
        return Tuning(draft_k)
    parallel = method in PARALLEL_DRAFTING
    k_min, k_max = k_range(spec, draft_k, parallel, k_limit)
    prev = previous if previous and previous.get("draft") == draft_uri else {}
    prior_c, prior_source = _prior_cost(spec, training)
    ranges = bucket_ranges(list(t.load_buckets)) if t.load_buckets else [(1, MAX_BATCH)]
    first = start_k(spec, draft_k, training, prior_c, parallel, k_limit)
    schedule_prev = prev.get("schedule") or []
    if t.load_buckets and len(schedule_prev) == len(ranges):
        current = [int(b["numSpeculativeTokens"]) for b in schedule_prev]
    elif prev.get("numSpeculativeTokens"):
        current = [int(prev["numSpeculativeTokens"])] * len(ranges)
    else:
        current = [first] * len(ranges)
    # Within the range as it is now (spec.tuning.max lowered, or a block limit learnt since).
    current = [k if k == 0 else min(max(k, k_min), k_max) for k in current]

    stored = prev.get("observations") or []
    observations = merge_observations(stored, live or {}, now, t.min_drafts)
    measures = [_measure(o) for o in observations]
    rates = pooled_rates([m for m in measures if m.k > 0])
    offline_cond = list(_offline(training).get("conditionalAcceptance") or [])
    changed_at = parse_time(prev.get("lastChangeTime"))
    since = (parse_time(now) or 0.0) - changed_at if changed_at is not None else None
    settling = bool(prev.get("settling"))
    params = chooser.Params(
        k_min=k_min,
        k_max=k_max,
        min_gain=0.0 if settling else t.min_gain / 100.0,
        cooldown_seconds=float(t.cooldown_seconds),
        min_drafts=float(t.min_drafts),
        allow_off=bool(t.load_buckets),
    )
    choices: list[chooser.Choice] = []
    cost = None
    for index, (lo, hi) in enumerate(ranges):
        mine = [m for o, m in zip(observations, measures, strict=True) if o.get("bucket", 0) == index]
        cost = fit_step_cost(
            [(m.k, m.step_seconds or 0.0, m.drafts) for m in mine], prior_c, parallel=parallel
        )
        label = f"batch {lo}-{hi}" if t.load_buckets else ""
        choices.append(
            chooser.choose(
                current[index],
                mine,
                rates,
                cost,
                params,
                since_change=since,
                offline_cond=offline_cond,
                label=label,
            )
        )
    assert cost is not None
    new = [ch.k for ch in choices]
    status: dict[str, Any] = {
        "draft": draft_uri,
        "changes": int(prev.get("changes") or 0),
        "costRatio": round(cost.c, 5),
        "costRatioSource": "measured" if cost.source == "measured" else prior_source,
        "observations": stored,
    }
    for key in ("lastChangeTime", "lastChange"):
        if prev.get(key):
            status[key] = prev[key]
    events: list[Event] = []
    changed = [ch for ch in choices if ch.changed]
    if changed or _stale(stored, observations, now, window_seconds):
        # Persist what was measured only at decisions or once a window: one status write per window.
        status["observations"] = observations
    decided = [ch for ch in choices if ch.reason in (chooser.TUNED, chooser.STABLE)]
    if changed:
        status["settling"] = any(ch.explored for ch in changed)
    elif settling and not decided:
        status["settling"] = True  # still waiting for the window that measures the guess
    if changed:
        status["changes"] += 1
        status["lastChangeTime"] = now
        status["lastChange"] = "; ".join(ch.message for ch in changed)
        events.append(Event("Normal", "Tuned", status["lastChange"]))
    if t.load_buckets:
        status["schedule"] = [
            {
                "minBatchSize": lo,
                "maxBatchSize": hi,
                "numSpeculativeTokens": ch.k,
                **({"expectedSpeedup": round(ch.expected_speedup, 4)} if ch.expected_speedup else {}),
            }
            for (lo, hi), ch in zip(ranges, choices, strict=True)
        ]
        top = max(1, *new)
        schedule: Schedule | None = tuple((lo, hi, k) for (lo, hi), k in zip(ranges, new, strict=True))
    else:
        top, schedule = new[0], None
    status["numSpeculativeTokens"] = top
    if choices[0].expected_speedup is not None and not t.load_buckets:
        status["expectedSpeedup"] = round(choices[0].expected_speedup, 4)

    waiting = [ch for ch in choices if ch.reason == chooser.WAITING]
    detail = "; ".join(ch.message for ch in choices)
    last = f"; last change: {status['lastChange']}" if status.get("lastChange") and not changed else ""
    if changed:
        cond = Cond("Tuned", "True", chooser.TUNED, detail)
    elif waiting and len(waiting) == len(choices):
        cond = Cond("Tuned", "Unknown", chooser.WAITING, detail + last)
    else:
        reason = chooser.COOLDOWN if any(ch.reason == chooser.COOLDOWN for ch in choices) else chooser.STABLE
        cond = Cond("Tuned", "True", reason, detail + last)
    return Tuning(top, schedule, status, cond, events)
