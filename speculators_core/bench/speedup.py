"""Baseline vs speculator from two GuideLLM reports: per request rate, latency and throughput of each, the
speed-up, and the request rate above which speculation stops paying.

Input is GuideLLM's own JSON report (`guidellm run ... --output kind=json,path=...`, report schema version 2
of guidellm 0.8.x: `benchmarks[].config.strategy`, `benchmarks[].metrics.<metric>.successful.{mean,
percentiles.p50,p95}`), read as plain JSON so this module needs neither GuideLLM nor torch.

The two runs need not be at the same rates (a sweep picks its rates from each server's own measured
throughput): the baseline's latency is interpolated, linearly in the request rate, at each speculator
point within the baseline's measured range. A point's rate is the one offered: the target of an open-loop
strategy (constant, poisson), else the achieved rate. The speed-up is the baseline's median inter-token
latency over the speculator's (what a user streaming tokens sees); the breakeven rate is where it crosses
1, interpolated between the two points around the crossing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

# GuideLLM metric names (benchmarks[].metrics) -> our field prefixes
_METRICS = {
    "inter_token_latency_ms": "itl",
    "time_to_first_token_ms": "ttft",
}


# strategies whose requests are sent at a set rate, however the server copes (requests still in flight
# when the benchmark ends are cut off, so successful/duration understates the rate offered)
_OPEN_LOOP = {"constant", "poisson"}


class ReportError(ValueError):
    """A file that is not a GuideLLM report this module can read (the message says what is missing)."""


@dataclass(frozen=True)
class RatePoint:
    """One GuideLLM benchmark (one rate) of one server."""

    strategy: str  # synchronous, constant, poisson, throughput, concurrent, ...
    target_rate: float | None  # requests/s asked for (constant/poisson), None otherwise
    # requests/s offered: the target for open-loop strategies (what the scheduler sent, whether or not
    # the server kept up), else what was achieved
    request_rate: float
    achieved_rate: float  # successful requests over the benchmark's duration
    concurrency: float  # mean requests in flight
    itl_p50_ms: float
    itl_p95_ms: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    output_tokens_per_s: float
    requests: int


@dataclass(frozen=True)
class RateComparison:
    request_rate: float  # the speculator point's rate
    strategy: str
    speculator: RatePoint
    baseline_itl_p50_ms: float  # interpolated at request_rate
    baseline_itl_p95_ms: float
    baseline_ttft_p50_ms: float
    baseline_ttft_p95_ms: float
    baseline_output_tokens_per_s: float
    speedup: float  # baseline ITL p50 / speculator ITL p50


@dataclass(frozen=True)
class SpeedupSummary:
    rates: list[RateComparison]
    speedup_at_lowest_rate: float | None
    # requests/s where the speed-up falls below 1; None when it never does within the measured rates
    breakeven_rate: float | None
    breakeven: str  # "crossed" | "beyond-measured" | "below-lowest" | "no-overlap"
    baseline: list[RatePoint]
    speculator: list[RatePoint]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def compact(self) -> dict[str, Any]:
        """The summary as the benchmark Job reports it (its termination message, at most 4096 bytes): one
        row per compared rate, values in COLUMNS order, rounded; the operator names them in status."""
        rows = []
        for r in self.rates:
            s = r.speculator
            values = (
                r.request_rate, r.speedup,
                r.baseline_itl_p50_ms, r.baseline_itl_p95_ms, r.baseline_ttft_p50_ms, r.baseline_ttft_p95_ms,
                r.baseline_output_tokens_per_s,
                s.itl_p50_ms, s.itl_p95_ms, s.ttft_p50_ms, s.ttft_p95_ms, s.output_tokens_per_s,
            )  # fmt: skip
            rows.append([r.strategy, *(_sig(v) for v in values)])
        return {
            "columns": list(COLUMNS),
            "rates": rows,
            "speedupAtLowestRate": _sig(self.speedup_at_lowest_rate),
            "breakevenRate": _sig(self.breakeven_rate),
            "breakeven": self.breakeven,
        }


# The row layout of SpeedupSummary.compact (the operator's status reads it by these names).
COLUMNS = (
    "strategy", "requestRate", "speedup",
    "baseline.itlP50Ms", "baseline.itlP95Ms", "baseline.ttftP50Ms", "baseline.ttftP95Ms",
    "baseline.outputTokensPerSecond",
    "speculator.itlP50Ms", "speculator.itlP95Ms", "speculator.ttftP50Ms", "speculator.ttftP95Ms",
    "speculator.outputTokensPerSecond",
)  # fmt: skip


def _sig(value: float | None, digits: int = 4) -> float | None:
    """`digits` significant digits: enough for a status, short enough for a termination message."""
    if value is None:
        return None
    return float(f"{value:.{digits}g}")


def _successful(metrics: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    try:
        value = metrics[name]["successful"]
    except (KeyError, TypeError):
        raise ReportError(f"{where}: metrics.{name}.successful is missing") from None
    if not isinstance(value, dict):
        raise ReportError(f"{where}: metrics.{name}.successful is not a distribution summary")
    return value


def _pct(summary: dict[str, Any], p: str) -> float:
    return float((summary.get("percentiles") or {}).get(p, summary.get("median", 0.0)))


def _achieved_rate(bench: dict[str, Any], metrics: dict[str, Any], where: str) -> float:
    """Successful requests over the benchmark's duration (GuideLLM's requests_per_second mean is a mean
    over its time buckets, empty ones included: noisy at a few requests)."""
    done = (metrics.get("request_totals") or {}).get("successful")
    duration = bench.get("duration")
    if isinstance(done, int | float) and isinstance(duration, int | float) and duration > 0:
        return float(done) / float(duration)
    return float(_successful(metrics, "requests_per_second", where).get("mean", 0.0))


def rate_points(report: dict[str, Any], source: str = "report") -> list[RatePoint]:
    """Every benchmark of a GuideLLM report, in run order."""
    benchmarks = report.get("benchmarks")
    if not isinstance(benchmarks, list) or not benchmarks:
        raise ReportError(f"{source}: no benchmarks[] (is it GuideLLM's JSON report, --output kind=json?)")
    out = []
    for i, bench in enumerate(benchmarks):
        where = f"{source}: benchmarks[{i}]"
        metrics = bench.get("metrics") or {}
        strategy = (bench.get("config") or {}).get("strategy") or {}
        kind = str(strategy.get("type_") or strategy.get("type") or "unknown")
        rate = strategy.get("rate")
        totals = metrics.get("request_totals") or {}
        target = float(rate) if isinstance(rate, int | float) and kind in _OPEN_LOOP else None
        achieved = _achieved_rate(bench, metrics, where)
        fields: dict[str, float] = {}
        for name, prefix in _METRICS.items():
            summary = _successful(metrics, name, where)
            fields[f"{prefix}_p50_ms"] = _pct(summary, "p50")
            fields[f"{prefix}_p95_ms"] = _pct(summary, "p95")
        out.append(
            RatePoint(
                strategy=kind,
                target_rate=target,
                request_rate=target if target is not None else achieved,
                achieved_rate=achieved,
                concurrency=float(_successful(metrics, "request_concurrency", where).get("mean", 0.0)),
                output_tokens_per_s=float(
                    _successful(metrics, "output_tokens_per_second", where).get("mean", 0.0)
                ),
                requests=int(totals.get("successful", 0)),
                **fields,
            )
        )
    return out


def load_points(path: Path) -> list[RatePoint]:
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot read a JSON report: {exc}") from exc
    return rate_points(report, str(path))


def _interpolate(xs: list[float], ys: list[float], x: float) -> float:
    for (x0, y0), (x1, y1) in pairwise(zip(xs, ys, strict=True)):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[0] if x <= xs[0] else ys[-1]


def compare(
    baseline: list[RatePoint], speculator: list[RatePoint], tolerance: float = 0.05
) -> SpeedupSummary:
    """Speed-up per speculator rate within the baseline's measured rates (`tolerance`: how far, as a
    fraction of the baseline's range, a rate may lie outside it and still be compared: a synchronous run's
    achieved rate differs a little between the two servers)."""
    base = sorted((p for p in baseline if p.requests > 0), key=lambda p: p.request_rate)
    spec = sorted((p for p in speculator if p.requests > 0), key=lambda p: p.request_rate)
    if not base or not spec:
        raise ReportError("a run has no benchmark with successful requests")
    xs = [p.request_rate for p in base]
    lo, hi = xs[0], xs[-1]
    slack = max(hi - lo, hi) * tolerance
    rates = []
    for point in spec:
        if not lo - slack <= point.request_rate <= hi + slack:
            continue
        x = point.request_rate

        def at(attr: str, x: float = x) -> float:
            return _interpolate(xs, [getattr(p, attr) for p in base], x)

        base_itl = at("itl_p50_ms")
        rates.append(
            RateComparison(
                request_rate=x,
                strategy=point.strategy,
                speculator=point,
                baseline_itl_p50_ms=base_itl,
                baseline_itl_p95_ms=at("itl_p95_ms"),
                baseline_ttft_p50_ms=at("ttft_p50_ms"),
                baseline_ttft_p95_ms=at("ttft_p95_ms"),
                baseline_output_tokens_per_s=at("output_tokens_per_s"),
                speedup=base_itl / point.itl_p50_ms if point.itl_p50_ms > 0 else 0.0,
            )
        )
    breakeven_rate, breakeven = _breakeven(rates)
    return SpeedupSummary(
        rates=rates,
        speedup_at_lowest_rate=rates[0].speedup if rates else None,
        breakeven_rate=breakeven_rate,
        breakeven=breakeven,
        baseline=list(baseline),
        speculator=list(speculator),
    )


def _breakeven(rates: list[RateComparison]) -> tuple[float | None, str]:
    if not rates:
        return None, "no-overlap"
    if rates[0].speedup < 1:
        return rates[0].request_rate, "below-lowest"
    for a, b in pairwise(rates):
        if a.speedup >= 1 > b.speedup:
            t = (a.speedup - 1) / (a.speedup - b.speedup)
            return a.request_rate + t * (b.request_rate - a.request_rate), "crossed"
    return None, "beyond-measured"
