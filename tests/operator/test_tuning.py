"""Automatic k: the throughput model, the choice (table-driven), hysteresis, load buckets, degenerate
inputs, and status.tuning through derive_speculator (pure; the cluster test drives the real loop)."""

from __future__ import annotations

import itertools
import json

import pytest
from spd_testlib import speculator

from speculators_core.eval.cost import best_k, per_position_from_conditional
from speculators_core.vllm_metrics.acceptance import Counters, counters_from_text
from speculators_operator.api.speculator import SpeculatorSpec
from speculators_operator.metrics.scraper import speculative_plan
from speculators_operator.metrics.store import bucket_of, k_of, measure_key
from speculators_operator.metrics.window import AcceptanceWindow
from speculators_operator.status.tuning import bucket_ranges, start_k, tune
from speculators_operator.tuning.choose import COOLDOWN, STABLE, TUNED, WAITING, Params, best_fixed_k, choose
from speculators_operator.tuning.model import (
    Measure,
    StepCost,
    extend_rates,
    fit_step_cost,
    pooled_rates,
    speedup,
)

HIGH = per_position_from_conditional([0.9] * 16)
MEDIUM = per_position_from_conditional([0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45] * 2)
LOW = per_position_from_conditional([0.45, 0.35, 0.3, 0.25] * 4)


def measure(k: int, rates: list[float], drafts: float = 10_000, step: float | None = None) -> Measure:
    return Measure(k, drafts, tuple(r * drafts for r in rates[:k]), step)


@pytest.mark.parametrize(
    ("rates", "cost_ratio", "expected"),
    [
        (HIGH, 0.02, 8),  # long chains pay while drafting is cheap: the cap
        (HIGH, 0.30, 5),
        (MEDIUM, 0.05, 5),
        (MEDIUM, 0.20, 3),
        (LOW, 0.05, 2),
        (LOW, 0.30, 1),
    ],
)
def test_best_k_table(rates, cost_ratio, expected):
    params = Params(k_max=8)
    cost = StepCost(None, cost_ratio, "prior")
    assert best_fixed_k(rates, cost, params) == expected
    assert best_k(rates[:8], cost_ratio) == expected  # speculators_core's offline table agrees


def test_choice_explores_up_to_the_estimate_then_corrects_down_exactly():
    params = Params(k_max=8, min_drafts=100, min_gain=0.02)
    # Measured at k=2 on a draft whose acceptance falls off after position 2: the last conditional rate
    # (0.85) is an optimistic tail, so the tuner overshoots to the cap...
    truth = per_position_from_conditional([0.9, 0.85, 0.8, 0.6, 0.4, 0.3, 0.3, 0.3])
    cost = StepCost(None, 0.05, "prior")
    first = choose(2, [measure(2, truth)], pooled_rates([measure(2, truth)]), cost, params, since_change=None)
    assert (first.k, first.reason, first.explored) == (8, TUNED, True)
    assert "k 2 → 8" in first.message and "exploring" in first.message
    # ... where every position below 8 is now measured: the correction down is exact, to the true best.
    measures = [measure(2, truth), measure(8, truth)]
    second = choose(8, measures, pooled_rates(measures), cost, params, since_change=None)
    assert second.k == best_fixed_k(truth, cost, params) == 4 and not second.explored
    third = choose(4, [*measures, measure(4, truth)], pooled_rates(measures), cost, params, since_change=None)
    assert third.reason == STABLE
    # With the training's offline shape as the tail, the first move already lands on the best k.
    guided = choose(
        2, [measure(2, truth)], pooled_rates([measure(2, truth)]), cost, params, since_change=None,
        offline_cond=[0.9, 0.85, 0.8, 0.6, 0.4, 0.3, 0.3, 0.3],
    )  # fmt: skip
    assert guided.k == 4


@pytest.mark.parametrize(
    ("measures", "current", "reason"),
    [
        ([], 3, WAITING),  # no drafts at all
        ([measure(3, MEDIUM, drafts=99)], 3, WAITING),  # too few drafts to judge
        ([measure(4, MEDIUM)], 3, WAITING),  # data only for another k (a rollout in progress)
        ([Measure(3, 10_000, (8000.0,))], 3, TUNED),  # missing positions count as never accepted
    ],
)
def test_degenerate_inputs(measures, current, reason):
    params = Params(k_max=8, min_drafts=100)
    rates = pooled_rates(measures)
    choice = choose(current, measures, rates, StepCost(None, 0.05, "prior"), params, since_change=None)
    assert choice.reason == reason
    if reason == TUNED:
        assert choice.k == 1  # only position 0 was ever accepted


def test_counter_reset_between_scrapes_counts_from_zero_not_negative():
    window = AcceptanceWindow(300)
    text = "\n".join(
        [
            'vllm:spec_decode_num_drafts_total{{engine="0"}} {d}',
            'vllm:spec_decode_num_accepted_tokens_per_pos_total{{engine="0",position="0"}} {a}',
            'vllm:inter_token_latency_seconds_sum{{engine="0"}} {s}',
            'vllm:inter_token_latency_seconds_count{{engine="0"}} {c}',
            'vllm:num_requests_running{{engine="0"}} 3.0',
        ]
    )
    for t, (d, a, s, c) in enumerate(
        [(1000, 800, 20.0, 1000), (2000, 1600, 40.0, 2000), (500, 400, 10.0, 500)]
    ):
        counters = counters_from_text(text.format(d=d, a=a, s=s, c=c))
        assert counters is not None
        window.observe("p", 100.0 + t, counters, instance="uid/0", started_at=-1000.0, plan=1)
    ((key, delta),) = window.increase_by(103.0, measure_key(())).items()
    assert key == (0, 1)
    assert (delta.drafts, delta.per_pos[0], delta.itl_count) == (1500, 1200, 1500)  # 1000 + the 500 after
    assert delta.itl_sum / delta.itl_count == pytest.approx(0.02)


def test_fit_step_cost_recovers_the_cost_ratio_from_two_ks():
    a, c = 0.02, 0.08
    cost = fit_step_cost([(2, a * (1 + 2 * c), 5000), (5, a * (1 + 5 * c), 5000)], prior_c=0.3)
    assert cost.source == "measured" and cost.a == pytest.approx(a) and cost.c == pytest.approx(c)
    single = fit_step_cost([(3, a * (1 + 3 * c), 5000)], prior_c=0.3)
    assert single.source == "prior" and single.c == 0.3
    assert fit_step_cost([], prior_c=0.3) == StepCost(None, 0.3, "prior")


def test_tail_estimate_uses_the_last_conditional_rate_capped_by_the_offline_shape():
    measured = per_position_from_conditional([0.9, 0.8])
    assert extend_rates(measured, 4) == pytest.approx(per_position_from_conditional([0.9, 0.8, 0.8, 0.8]))
    offline = [0.9, 0.8, 0.4, 0.2]  # the training saw acceptance fall off after position 1
    assert extend_rates(measured, 4, offline) == pytest.approx(
        per_position_from_conditional([0.9, 0.8, 0.4, 0.2])
    )


def test_hysteresis_rates_across_a_boundary_change_k_at_most_once_per_cooldown():
    """Rates oscillate around the k=3/k=4 boundary every minute for an hour: at most one change per
    cooldown, and none at all inside the minGain band."""
    cooldown = 600.0
    params = Params(k_max=8, min_gain=0.05, cooldown_seconds=cooldown, min_drafts=100)
    cost = StepCost(None, 0.12, "prior")
    k, last_change, changes = 3, None, []
    for minute in range(60):
        q = 0.66 if minute % 2 else 0.74  # the 4th position's conditional rate swings across the boundary
        rates = per_position_from_conditional([0.85, 0.8, 0.75, q, q, q, q, q])
        observed = [measure(j, rates) for j in range(1, 9)]  # every k measured: no exploration effects
        now = minute * 60.0
        since = None if last_change is None else now - last_change
        choice = choose(k, [m for m in observed if m.k == k], rates, cost, params, since_change=since)
        if choice.changed:
            changes.append(now)
            k, last_change = choice.k, now
        else:
            assert choice.reason in (STABLE, COOLDOWN)
    gaps = [b - a for a, b in itertools.pairwise(changes)]
    assert all(g >= cooldown for g in gaps)
    assert len(changes) <= 60 * 60 / cooldown


def test_load_buckets_turn_speculation_off_where_the_verifier_is_compute_bound():
    params = Params(k_min=1, k_max=6, min_drafts=100, allow_off=True)
    rates = MEDIUM[:6]
    # Low load: memory-bound, drafting is cheap.
    low = fit_step_cost([(3, 0.020 * (1 + 3 * 0.04), 10_000), (4, 0.020 * (1 + 4 * 0.04), 10_000)], 0.05)
    # High load: compute-bound; each drafted token costs as much as the verifier's own step.
    high = fit_step_cost([(1, 0.080 * (1 + 1.0), 10_000), (2, 0.080 * (1 + 2.0), 10_000)], 0.05)
    lo = choose(4, [measure(3, rates), measure(4, rates)], rates, low, params, since_change=None)
    hi = choose(2, [measure(1, rates), measure(2, rates)], rates, high, params, since_change=None)
    assert lo.k >= 4
    assert (hi.k, hi.reason) == (0, TUNED) and speedup(1, rates, high) < 1


def test_a_block_parallel_draft_costs_one_pass_at_every_k():
    """DFlash drafts its whole block in one pass: step time does not grow with k, so c is fit from
    windows with and without speculation, and a neighbouring k is never probed to measure it."""
    a, c = 0.02, 0.3
    flat = [(3, a * (1 + c), 5000), (7, a * (1 + c), 5000)]
    # Read sequentially, two ks at one step time say drafting is free; read as one pass each, they are
    # one point: c stays the prior and a is measured at it.
    assert fit_step_cost(flat, prior_c=0.3).c == 0.0
    cost = fit_step_cost(flat, prior_c=0.3, parallel=True)
    assert (cost.source, cost.parallel, cost.a) == ("prior", True, pytest.approx(a))
    assert cost.seconds(1) == cost.seconds(15) == pytest.approx(a * (1 + c)) and cost.seconds(0) == a
    measured = fit_step_cost([(0, a, 5000), (7, a * (1 + c), 5000)], prior_c=0.05, parallel=True)
    assert measured.source == "measured" and measured.c == pytest.approx(c)

    # With the pass paid anyway, the whole block pays wherever a later position is ever accepted; the
    # sequential model at the same c stops far earlier.
    params = Params(k_max=15, min_drafts=100)
    rates = MEDIUM[:15]
    parallel = choose(3, [measure(3, rates)], rates, cost, params, since_change=None)
    sequential = choose(3, [measure(3, rates)], rates, StepCost(a, c, "prior"), params, since_change=None)
    assert (parallel.k, parallel.reason) == (15, TUNED)
    assert sequential.k < 6
    # Stable at the top: no probe of k-1 (it would cost the same pass and measure nothing).
    top = choose(15, [measure(15, rates)], rates, cost, params, since_change=None)
    assert (top.k, top.reason) == (15, STABLE)
    # Load buckets: the only probe that measures c is a window without speculation.
    off = choose(15, [measure(15, rates)], rates, cost, Params(k_max=15, min_drafts=100, allow_off=True),
                 since_change=None)  # fmt: skip
    assert (off.k, off.reason, off.explored) == (0, TUNED, True)


def test_tune_keeps_a_dflash_draft_within_its_block():
    spec = SpeculatorSpec.model_validate(
        speculator(tuning={"mode": "auto", "minDrafts": 100, "cooldownSeconds": 60, "max": 16})["spec"]
    )
    rates = HIGH[:7]
    out = tune(spec, "hf://d", 7, None, _live(7, rates), None, "2026-01-01T00:00:00Z", method="dflash",
               k_limit=7)  # fmt: skip
    assert out.k == 7 and out.condition.reason == STABLE  # the block's last position, never beyond
    # The same rates read as a sequential EAGLE-3 draft explore past its k.
    seq = tune(spec, "hf://d", 7, None, _live(7, rates), None, "2026-01-01T00:00:00Z")
    assert seq.k > 7
    # A block-parallel draft whose limit is unknown stays at its own k at most.
    assert (
        tune(spec, "hf://d", 5, None, _live(5, rates), None, "2026-01-01T00:00:00Z", method="dflash").k == 5
    )


def test_buckets_plans_and_ranges():
    assert bucket_ranges([4, 16]) == [(1, 4), (5, 16), (17, 65536)]
    assert [bucket_of(x, (4, 16)) for x in (0.2, 4.4, 5, 16, 17, 900)] == [0, 0, 1, 1, 2, 2]
    schedule = ((1, 4, 5), (5, 16, 3), (17, 65536, 0))
    assert [k_of(schedule, x) for x in (1, 4, 6, 40)] == [5, 5, 3, 0]
    assert k_of(4, 100) == 4 and k_of(None, 1) is None
    config = {"model": "/m", "method": "eagle3", "num_speculative_tokens": 5}
    pod = {"spec": {"containers": [{"args": ["serve", "/v", "--speculative-config", json.dumps(config)]}]}}
    assert speculative_plan(pod) == 5
    config["num_speculative_tokens_per_batch_size"] = [list(e) for e in schedule]
    pod["spec"]["containers"][0]["args"][3] = json.dumps(config)
    assert speculative_plan(pod) == schedule
    assert speculative_plan({"spec": {"containers": [{"args": ["--speculative-config", "{bad"]}]}}) is None


def _live(k: int, rates: list[float], drafts: float = 5000, step: float = 0.02) -> dict:
    per_pos = {i: r * drafts for i, r in enumerate(rates[:k])}
    return {
        (0, k): Counters(
            drafts, drafts * k, sum(per_pos.values()), per_pos, itl_sum=step * drafts, itl_count=drafts
        )
    }


def test_tune_starts_from_the_training_evaluation_then_follows_live_data():
    spec = SpeculatorSpec.model_validate(
        speculator(tuning={"mode": "auto", "minDrafts": 100, "cooldownSeconds": 60})["spec"]
    )
    training = {
        "status": {"evaluation": {"acceptanceLengthByK": [1.9, 2.6, 3.1, 3.4, 3.5], "draftCostRatio": 0.05}}
    }
    assert start_k(spec, 3, training, 0.05) == 4  # 3.4/1.2 beats 3.1/1.15 and 3.5/1.25
    first = tune(spec, "hf://d", 3, None, None, training, "2026-01-01T00:00:00Z")
    assert first.k == 4 and first.condition.reason == WAITING and first.status["changes"] == 0
    assert first.status["costRatioSource"] == "evaluation"
    # Live acceptance is much lower than offline: k comes down, once, then the cooldown holds it.
    low = per_position_from_conditional([0.4, 0.5, 0.2, 0.2])
    second = tune(spec, "hf://d", 3, first.status, _live(4, low), training, "2026-01-01T00:05:00Z")
    assert second.k < 4 and second.condition.reason == TUNED and second.status["changes"] == 1
    assert [e.reason for e in second.events] == ["Tuned"]
    third = tune(spec, "hf://d", 3, second.status, _live(4, low), training, "2026-01-01T00:05:30Z")
    assert third.k == second.k and third.status["changes"] == 1
    # A new draft resets the tuning.
    fresh = tune(spec, "hf://other", 3, third.status, None, None, "2026-01-01T00:06:00Z")
    assert fresh.k == 3 and fresh.status["changes"] == 0 and fresh.status["observations"] == []


def test_fixed_mode_serves_the_drafts_k_untouched():
    spec = SpeculatorSpec.model_validate(speculator()["spec"])
    out = tune(spec, "hf://d", 3, None, _live(3, MEDIUM), None, "2026-01-01T00:00:00Z")
    assert (out.k, out.status, out.condition) == (3, None, None)


def test_a_new_k_changes_both_backends_pod_templates():
    """A tuned k (or schedule) must reach the pods: the Deployment's template, and on KServe the
    InferenceService itself (KServe does not roll pods for a ServingRuntime change alone)."""
    from speculators_operator.api.common import ModelSource
    from speculators_operator.render import kserve
    from speculators_operator.render.speculator import ResolvedDraft, SpeculatorContext, deployment

    ctx = SpeculatorContext.of(speculator(tuning={"mode": "auto"}, backend="kserve"))
    source = ModelSource(uri="hf://org/draft")
    three = ResolvedDraft(source, "eagle3", 3)
    scheduled = ResolvedDraft(source, "eagle3", 4, ((1, 4, 4), (5, 65536, 0)))
    isvcs = [kserve.inference_service(ctx, d)["spec"]["predictor"] for d in (three, scheduled)]
    assert isvcs[0]["annotations"] != isvcs[1]["annotations"]
    assert isvcs[1]["deploymentStrategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    args = isvcs[1]["model"]["args"]
    config = json.loads(args[args.index("--speculative-config") + 1])
    assert config["num_speculative_tokens"] == 4
    assert config["num_speculative_tokens_per_batch_size"] == [[1, 4, 4], [5, 65536, 0]]
    templates = [deployment(ctx, d)["spec"]["template"] for d in (three, scheduled)]
    assert templates[0] != templates[1]
