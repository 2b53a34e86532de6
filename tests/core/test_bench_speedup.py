"""Baseline vs speculator comparison of GuideLLM reports (speculators_core.bench.speedup), on reports in
GuideLLM 0.8's JSON shape built here; tests/bench runs the real GuideLLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speculators_core.bench.speedup import ReportError, compare, load_points


def bench(kind: str, rate: float | None, done: int, duration: float, itl: float, ttft: float = 20.0) -> dict:
    def dist(value: float) -> dict:
        return {
            "successful": {"mean": value, "median": value, "percentiles": {"p50": value, "p95": 1.5 * value}}
        }

    strategy = {"type_": kind, **({"rate": rate} if rate is not None else {})}
    return {
        "config": {"strategy": strategy},
        "duration": duration,
        "metrics": {
            "request_totals": {"successful": done, "errored": 0, "incomplete": 0, "total": done},
            "requests_per_second": dist(done / duration),
            "request_concurrency": dist(1.0),
            "inter_token_latency_ms": dist(itl),
            "time_to_first_token_ms": dist(ttft),
            "output_tokens_per_second": dist(1000 / itl),
        },
    }


def write(tmp_path: Path, name: str, benches: list[dict]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"metadata": {"version": 2}, "benchmarks": benches}))
    return path


def test_speedup_per_rate_and_the_breakeven_between_the_points_around_it(tmp_path: Path) -> None:
    # Baseline ITL grows slowly with rate; the speculator's faster (ITL x4 from rate 1 to 4).
    base = write(
        tmp_path, "b.json", [bench("constant", r, 10 * r, 10, itl) for r, itl in ((1, 20), (2, 22), (4, 26))]
    )
    spec = write(
        tmp_path, "s.json", [bench("constant", r, 10 * r, 10, itl) for r, itl in ((1, 10), (2, 16), (4, 40))]
    )
    summary = compare(load_points(base), load_points(spec))
    assert [round(r.request_rate, 3) for r in summary.rates] == [1, 2, 4]
    assert summary.speedup_at_lowest_rate == pytest.approx(2.0)
    assert summary.rates[1].speedup == pytest.approx(22 / 16)
    # speed-up 1.375 at 2 req/s, 0.65 at 4: crosses 1 at 2 + 2 * 0.375 / 0.725
    assert summary.breakeven == "crossed"
    assert summary.breakeven_rate == pytest.approx(2 + 2 * 0.375 / 0.725)
    assert summary.rates[0].baseline_itl_p95_ms == pytest.approx(30.0)


def test_the_baseline_is_interpolated_at_the_speculators_rates_and_ranges_are_respected(
    tmp_path: Path,
) -> None:
    base = write(tmp_path, "b.json", [bench("constant", r, 10 * r, 10, itl) for r, itl in ((1, 20), (3, 30))])
    spec = write(
        tmp_path, "s.json", [bench("constant", r, 10 * r, 10, itl) for r, itl in ((2, 10), (6, 8))]
    )  # 6 req/s is beyond anything the baseline was measured at: not compared
    summary = compare(load_points(base), load_points(spec))
    assert [r.request_rate for r in summary.rates] == [2]
    assert summary.rates[0].baseline_itl_p50_ms == pytest.approx(25.0)
    assert (summary.breakeven, summary.breakeven_rate) == ("beyond-measured", None)

    slow = write(tmp_path, "slow.json", [bench("synchronous", None, 10, 10, 40)])
    assert compare(load_points(base), load_points(slow)).breakeven == "below-lowest"


def test_a_file_that_is_not_a_guidellm_report_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no benchmarks"):
        load_points(write(tmp_path, "x.json", []))
    broken = bench("constant", 1, 10, 10, 20)
    del broken["metrics"]["inter_token_latency_ms"]
    with pytest.raises(ReportError, match=r"benchmarks\[0\]: metrics.inter_token_latency_ms.successful"):
        load_points(write(tmp_path, "y.json", [broken]))
    (tmp_path / "z.json").write_text("{not json")
    with pytest.raises(ReportError, match="cannot read a JSON report"):
        load_points(tmp_path / "z.json")
