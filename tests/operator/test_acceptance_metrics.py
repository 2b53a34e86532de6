"""Acceptance math from real vLLM exposition text: parsing, windows, counter resets, rounding."""

from __future__ import annotations

import pytest
from spd_testlib import FIXTURE_METRICS
from spd_testlib import scaled_fixture as scaled

from speculators_core.vllm_metrics.acceptance import Counters, counters_from_text, same_values, summarize
from speculators_core.vllm_metrics.exposition import parse
from speculators_operator.metrics.prometheus import counters_by_deployment, fleet_queries
from speculators_operator.metrics.window import AcceptanceWindow

FIXTURE = FIXTURE_METRICS.read_text()
# Series a real vLLM server exposes next to the spec-decode counters (trimmed from a vLLM 0.33 /metrics).
UNRELATED = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12345.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 99999.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B"} 42.0
vllm:spec_decode_num_drafts_total{engine="0",model_name="odd \\"quoted\\", name"} 0.0
http_requests_total{handler="/metrics",method="GET",status="2xx"} 7.0
this line is { not valid
"""


def test_fixture_gives_the_documented_numbers():
    counters = counters_from_text(FIXTURE)
    assert counters == Counters(1000.0, 3000.0, 1788.0, {0: 796.0, 1: 579.0, 2: 413.0}, counters.created)
    summary = summarize(counters, window_seconds=300, pods=1, source="pods")
    assert summary["acceptanceRate"] == 0.596
    assert summary["meanAcceptanceLength"] == 2.788
    assert summary["perPosition"] == [0.796, 0.579, 0.413]
    assert (summary["drafts"], summary["draftTokens"], summary["acceptedTokens"]) == (1000, 3000, 1788)


def test_unrelated_and_malformed_series_are_skipped():
    counters = counters_from_text(UNRELATED + FIXTURE + UNRELATED)
    assert counters.drafts == 1000.0  # the odd model's 0 adds nothing; nothing else leaks in
    assert counters.draft_tokens == 3000.0 and counters.accepted == 1788.0
    assert counters_from_text(UNRELATED.replace("vllm:spec_decode", "vllm:other")) is None


def test_model_name_filter_and_engines_are_summed():
    two_engines = FIXTURE + FIXTURE.replace('engine="0"', 'engine="1"')
    counters = counters_from_text(two_engines)
    assert counters.drafts == 2000.0 and counters.per_pos[2] == 826.0
    assert counters_from_text(FIXTURE, model_name="other-model") is None


def test_label_values_with_escapes():
    (sample,) = parse('m{a="x\\"y",b="c\\\\d",c="e,f"} 1\n')
    assert sample.labels == {"a": 'x"y', "b": "c\\d", "c": "e,f"}


def test_window_of_two_scrapes_counts_only_the_increase():
    window = AcceptanceWindow(300)
    window.observe("p", 1000.0, counters_from_text(scaled(1)), instance="uid/0", started_at=0.0)
    delta, pods = window.increase(1000.0)
    assert delta.drafts == 0 and pods == 0  # one scrape of an old pod: nothing to count yet
    window.observe("p", 1030.0, counters_from_text(scaled(3)), instance="uid/0", started_at=0.0)
    delta, pods = window.increase(1030.0)
    assert pods == 1
    assert (delta.drafts, delta.draft_tokens, delta.accepted) == (2000.0, 6000.0, 3576.0)
    s = summarize(delta, window_seconds=300, pods=pods, source="pods")
    assert s["acceptanceRate"] == 0.596 and s["meanAcceptanceLength"] == 2.788


def test_pod_started_inside_the_window_counts_from_its_first_scrape():
    window = AcceptanceWindow(300)
    window.observe("p", 1000.0, counters_from_text(FIXTURE), instance="uid/0", started_at=900.0)
    delta, pods = window.increase(1000.0)
    assert delta.drafts == 1000.0 and pods == 1


@pytest.mark.parametrize("how", ["value", "created", "instance"])
def test_counter_reset_is_neither_negative_nor_inflated(how):
    window = AcceptanceWindow(300)
    window.observe("p", 1000.0, counters_from_text(scaled(1)), instance="uid/0", started_at=0.0)
    window.observe("p", 1030.0, counters_from_text(scaled(5)), instance="uid/0", started_at=0.0)
    # The pod restarts: counters start again from zero; at the next scrape it has done 2x the fixture.
    if how == "value":  # only the values tell (they went down)
        text, instance = scaled(2), "uid/0"
    elif how == "created":  # vLLM's *_created moved; values happen to be higher than before
        text, instance = scaled(7, created=1.8e9), "uid/0"
    else:  # the container restarted (restartCount changed)
        text, instance = scaled(7), "uid/1"
    window.observe("p", 1060.0, counters_from_text(text), instance=instance, started_at=1045.0)
    delta, _ = window.increase(1060.0)
    after_restart = 2.0 if how == "value" else 7.0
    assert delta.drafts == 1000.0 * (4 + after_restart)
    assert delta.accepted == 1788.0 * (4 + after_restart)
    s = summarize(delta, window_seconds=300, pods=1, source="pods")
    assert s["acceptanceRate"] == 0.596 and s["meanAcceptanceLength"] == 2.788
    assert all(0 <= r <= 1 for r in s["perPosition"])


def test_old_samples_leave_the_window_and_gone_pods_are_dropped():
    window = AcceptanceWindow(60)
    window.observe("a", 0.0, counters_from_text(scaled(1)), instance="a/0", started_at=-1000.0)
    window.observe("a", 30.0, counters_from_text(scaled(2)), instance="a/0", started_at=-1000.0)
    window.observe("a", 60.0, counters_from_text(scaled(2)), instance="a/0", started_at=-1000.0)
    window.observe("b", 60.0, counters_from_text(scaled(1)), instance="b/0", started_at=-1000.0)
    window.observe("b", 90.0, counters_from_text(scaled(2)), instance="b/0", started_at=-1000.0)
    delta, pods = window.increase(95.0)
    # a: baseline at 30 (before 35), then no growth; b: 1x fixture.
    assert delta.drafts == 1000.0 and pods == 2
    delta, pods = window.increase(200.0)
    assert delta.drafts == 0 and "a" not in window.pods and "b" not in window.pods


def test_summary_without_traffic_has_no_rates():
    s = summarize(Counters(), window_seconds=300, pods=1, source="pods")
    assert "acceptanceRate" not in s and "meanAcceptanceLength" not in s and s["perPosition"] == []
    assert s["drafts"] == 0


def test_same_values_ignores_time_and_sub_rounding_noise():
    a = summarize(counters_from_text(FIXTURE), window_seconds=300, pods=1, source="pods")
    b = summarize(
        Counters(1000.0, 3000.0, 1788.2, {0: 796.0, 1: 579.0, 2: 413.0}),
        window_seconds=300,
        pods=1,
        source="pods",
    )
    assert same_values(a, b)  # 0.2 of a token is below rounding: no status write
    c = summarize(
        Counters(1000.0, 3000.0, 1790.0, {0: 796.0, 1: 579.0, 2: 415.0}),
        window_seconds=300,
        pods=1,
        source="pods",
    )
    assert not same_values(a, c)
    assert same_values({**a, "lastScrapeTime": "x"}, {**a, "lastScrapeTime": "y"})


def test_prometheus_queries_and_results():
    q = fleet_queries("team-a", 300)
    assert (
        q["drafts"] == 'sum by (pod) (increase(vllm:spec_decode_num_drafts_total{namespace="team-a"}[300s]))'
    )
    assert q["per_pos"].startswith(
        "sum by (pod, position) (increase(vllm:spec_decode_num_accepted_tokens_per_pos_total"
    )
    pods = ("llama-vllm-5d8f7c9b4-x2k9q", "llama-vllm-5d8f7c9b4-b7w2m")

    def split(total: str) -> list[dict]:
        half = float(total) / 2
        return [{"metric": {"pod": pod}, "value": [1, str(half)]} for pod in pods]

    results = {
        "drafts": split("1000"),
        "draft_tokens": split("3000"),
        "accepted": split("1788"),
        "per_pos": [
            {"metric": {"pod": pod, "position": str(i)}, "value": [1, str(float(v) / 2)]}
            for pod in pods
            for i, v in enumerate(["796", "579", "413"])
        ],
    }
    counters, n = counters_by_deployment(results)["llama-vllm"]
    assert n == 2
    s = summarize(counters, window_seconds=300, pods=n, source="prometheus")
    assert s["acceptanceRate"] == 0.596 and s["perPosition"] == [0.796, 0.579, 0.413]
