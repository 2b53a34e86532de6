"""The speed-up report a person looks at: one self-contained HTML page (inline SVG, no scripts, no
network) with inter-token latency vs request rate for the baseline and the speculator, acceptance per
draft position when it is known, and the numbers table; plus the summary as JSON.

Pure functions of a SpeedupSummary (speculators_core.bench.speedup); the page is plain HTML so it opens
from a PVC, an artifact store or a mail attachment alike.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speculators_core.bench.speedup import SpeedupSummary

BASELINE_COLOR = "#6b7280"
SPECULATOR_COLOR = "#2563eb"


@dataclass(frozen=True)
class Acceptance:
    """Live acceptance of the served draft during the benchmark (from vLLM's counters)."""

    per_position: list[float]
    mean_acceptance_length: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Acceptance:
        rates = data.get("perPosition")
        if not isinstance(rates, list) or not all(isinstance(r, int | float) for r in rates):
            raise ValueError("acceptance: perPosition must be a list of numbers (rate per draft position)")
        length = data.get("meanAcceptanceLength")
        return cls([float(r) for r in rates], float(length) if isinstance(length, int | float) else None)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = (lo // step) * step
    out, v = [], start
    while v <= hi + step * 1e-9:
        out.append(round(v, 10))
        v += step
    if out[-1] < hi:
        out.append(round(out[-1] + step, 10))
    return out


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v) >= 0.01 or v == 0 else f"{v:.2e}"


def itl_chart(summary: SpeedupSummary, width: int = 640, height: int = 360) -> str:
    """SVG: ITL p50 (ms) vs request rate (req/s), one polyline per server."""
    series = {
        "baseline": [(p.request_rate, p.itl_p50_ms) for p in summary.baseline if p.requests > 0],
        "speculator": [(p.request_rate, p.itl_p50_ms) for p in summary.speculator if p.requests > 0],
    }
    points = [xy for s in series.values() for xy in s]
    if not points:
        return "<p>No benchmark had successful requests.</p>"
    xt = _ticks(0.0, max(x for x, _ in points))
    yt = _ticks(0.0, max(y for _, y in points))
    left, right, top, bottom = 64, 16, 16, 48
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + pw * (x - xt[0]) / (xt[-1] - xt[0])

    def sy(y: float) -> float:
        return top + ph * (1 - (y - yt[0]) / (yt[-1] - yt[0]))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="itl-chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="Inter-token latency vs request rate">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#d1d5db"/>',
    ]
    for x in xt:
        parts.append(f'<line x1="{sx(x):.1f}" y1="{top}" x2="{sx(x):.1f}" y2="{top + ph}" stroke="#eee"/>')
        parts.append(f'<text x="{sx(x):.1f}" y="{top + ph + 16}" text-anchor="middle">{_fmt(x)}</text>')
    for y in yt:
        parts.append(f'<line x1="{left}" y1="{sy(y):.1f}" x2="{left + pw}" y2="{sy(y):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{_fmt(y)}</text>')
    parts.append(
        f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle">request rate (req/s)</text>'
        f'<text transform="translate(14 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
        "ITL p50 (ms)</text>"
    )
    if summary.breakeven_rate is not None and summary.breakeven == "crossed":
        x = sx(summary.breakeven_rate)
        parts.append(
            f'<line class="breakeven" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" '
            'stroke="#dc2626" stroke-dasharray="4 3"/>'
            f'<text x="{x + 4:.1f}" y="{top + 14}" fill="#dc2626">breakeven '
            f"{summary.breakeven_rate:.2f} req/s</text>"
        )
    colors = {"baseline": BASELINE_COLOR, "speculator": SPECULATOR_COLOR}
    for i, (name, pts) in enumerate(series.items()):
        pts = sorted(pts)
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(
            f'<polyline class="series" data-series="{name}" points="{path}" fill="none" '
            f'stroke="{colors[name]}" stroke-width="2"/>'
        )
        for x, y in pts:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colors[name]}"/>')
        ly = top + 14 + 18 * i
        parts.append(
            f'<line x1="{left + 12}" y1="{ly}" x2="{left + 32}" y2="{ly}" stroke="{colors[name]}" '
            f'stroke-width="2"/><text x="{left + 38}" y="{ly + 4}">{name}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def acceptance_chart(acceptance: Acceptance, width: int = 640, height: int = 220) -> str:
    """SVG bars: acceptance rate per draft position (0..1)."""
    left, top, bottom = 48, 12, 40
    pw, ph = width - left - 16, height - top - bottom
    n = max(1, len(acceptance.per_position))
    bw = pw / n
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="acceptance-chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="Acceptance per draft position">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#d1d5db"/>',
    ]
    for y in (0, 0.25, 0.5, 0.75, 1.0):
        yy = top + ph * (1 - y)
        parts.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{y:g}</text>')
    for i, rate in enumerate(acceptance.per_position):
        h = ph * max(0.0, min(1.0, rate))
        x = left + i * bw + bw * 0.15
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{top + ph - h:.1f}" width="{bw * 0.7:.1f}" height="{h:.1f}" '
            f'fill="{SPECULATOR_COLOR}"><title>position {i}: {rate:.3f}</title></rect>'
            f'<text x="{x + bw * 0.35:.1f}" y="{top + ph + 16}" text-anchor="middle">{i}</text>'
        )
    parts.append(
        f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">draft position</text></svg>'
    )
    return "\n".join(parts)


def _table(summary: SpeedupSummary) -> str:
    head = (
        "<tr><th>rate (req/s)</th><th>strategy</th><th>ITL p50 base</th><th>ITL p50 spec</th>"
        "<th>ITL p95 base</th><th>ITL p95 spec</th><th>TTFT p50 base</th><th>TTFT p50 spec</th>"
        "<th>TTFT p95 base</th><th>TTFT p95 spec</th><th>out tok/s base</th><th>out tok/s spec</th>"
        "<th>speed-up</th></tr>"
    )
    rows = []
    for r in summary.rates:
        s = r.speculator
        cells = [
            f"{r.request_rate:.2f}",
            html.escape(r.strategy),
            *(
                f"{v:.1f}"
                for v in (
                    r.baseline_itl_p50_ms,
                    s.itl_p50_ms,
                    r.baseline_itl_p95_ms,
                    s.itl_p95_ms,
                    r.baseline_ttft_p50_ms,
                    s.ttft_p50_ms,
                    r.baseline_ttft_p95_ms,
                    s.ttft_p95_ms,
                    r.baseline_output_tokens_per_s,
                    s.output_tokens_per_s,
                )
            ),
            f"{r.speedup:.2f}×",
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f'<table id="numbers">{head}{"".join(rows)}</table>'


def headline(summary: SpeedupSummary) -> str:
    """The report's one-sentence finding (plain text; the page escapes it)."""
    if summary.speedup_at_lowest_rate is None:
        return "The two runs share no request rate: no speed-up can be given."
    low = summary.rates[0].request_rate
    text = f"Speed-up {summary.speedup_at_lowest_rate:.2f}× in inter-token latency at {low:.2f} req/s"
    if summary.breakeven == "crossed" and summary.breakeven_rate is not None:
        text += f"; speculation stops paying above {summary.breakeven_rate:.2f} req/s."
    elif summary.breakeven == "beyond-measured":
        text += f"; it still pays at the highest rate measured ({summary.rates[-1].request_rate:.2f} req/s)."
    elif summary.breakeven == "below-lowest":
        text = f"Speculation does not pay even at the lowest rate measured ({low:.2f} req/s)."
    return text


def render_html(summary: SpeedupSummary, title: str, acceptance: Acceptance | None = None) -> str:
    """The whole page."""
    accept = ""
    if acceptance is not None and acceptance.per_position:
        length = (
            f" (mean acceptance length {acceptance.mean_acceptance_length:.2f})"
            if acceptance.mean_acceptance_length is not None
            else ""
        )
        accept = f"<h2>Acceptance per draft position{length}</h2>\n{acceptance_chart(acceptance)}"
    style = (
        "body{font-family:system-ui,sans-serif;margin:24px;color:#111}svg text{font-size:12px}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #d1d5db;padding:4px 8px;"
        "text-align:right}th{background:#f3f4f6}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
        f'<h1>{html.escape(title)}</h1>\n<p id="headline">{html.escape(headline(summary))}</p>\n'
        f"<h2>Inter-token latency vs request rate</h2>\n{itl_chart(summary)}\n{accept}\n"
        f"<h2>Numbers</h2>\n{_table(summary)}\n"
        "<p>Latencies in ms; the baseline is interpolated at the speculator's rates. Made by "
        "<code>speculators report</code> from GuideLLM's JSON reports.</p>\n</body></html>\n"
    )


def write_report(
    out_dir: Path, summary: SpeedupSummary, title: str, acceptance: Acceptance | None = None
) -> dict[str, Path]:
    """report.html and summary.json in `out_dir`, each written then renamed (a reader never sees half)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "html": (out_dir / "report.html", render_html(summary, title, acceptance)),
        "summary": (out_dir / "summary.json", json.dumps(summary.to_dict(), indent=1) + "\n"),
    }
    for path, text in files.values():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return {k: p for k, (p, _) in files.items()}
