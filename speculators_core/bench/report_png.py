"""report.png without a browser: the page's charts, headline and numbers drawn with matplotlib (Agg).

The PNG is a screenshot of report.html when headless Chromium is at hand (one source for both); the
runtime image has no browser, so the benchmark Job draws the same figures from the same SpeedupSummary
here instead: ITL p50 vs request rate for both servers (same colours, breakeven marker), acceptance per
draft position, and the numbers table. matplotlib is the `report` extra; this module imports it lazily
so `speculators report` works without it (the HTML needs nothing).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from speculators_core.bench.report import BASELINE_COLOR, SPECULATOR_COLOR, Acceptance, headline
from speculators_core.bench.speedup import SpeedupSummary

BREAKEVEN_COLOR = "#dc2626"


def available() -> bool:
    """Whether matplotlib can be imported (the `report` extra is installed)."""
    return importlib.util.find_spec("matplotlib") is not None


def _table_rows(summary: SpeedupSummary) -> list[list[str]]:
    return [
        [
            f"{r.request_rate:.2f}",
            f"{r.baseline_itl_p50_ms:.1f}",
            f"{r.speculator.itl_p50_ms:.1f}",
            f"{r.baseline_ttft_p50_ms:.1f}",
            f"{r.speculator.ttft_p50_ms:.1f}",
            f"{r.baseline_output_tokens_per_s:.1f}",
            f"{r.speculator.output_tokens_per_s:.1f}",
            f"{r.speedup:.2f}×",
        ]
        for r in summary.rates
    ]


def render_png(
    path: Path, summary: SpeedupSummary, title: str, acceptance: Acceptance | None = None, dpi: int = 100
) -> Path:
    """Draw the report into `path` (written then renamed)."""
    import matplotlib

    matplotlib.use("Agg")  # no display in a pod
    from matplotlib import pyplot as plt

    with_bars = acceptance is not None and bool(acceptance.per_position)
    rows = _table_rows(summary)
    heights = [4.0, *([2.2] if with_bars else []), 0.6 + 0.28 * (len(rows) + 1)]
    fig, axes = plt.subplots(
        len(heights), 1, figsize=(11, sum(heights) + 1.2), gridspec_kw={"height_ratios": heights}
    )
    try:
        fig.suptitle(f"{title}\n{headline(summary)}", fontsize=11, x=0.02, ha="left")
        itl = axes[0]
        series = {
            "baseline": ([p for p in summary.baseline if p.requests > 0], BASELINE_COLOR),
            "speculator": ([p for p in summary.speculator if p.requests > 0], SPECULATOR_COLOR),
        }
        for name, (points, color) in series.items():
            points = sorted(points, key=lambda p: p.request_rate)
            itl.plot(
                [p.request_rate for p in points],
                [p.itl_p50_ms for p in points],
                color=color,
                marker="o",
                markersize=5,
                linewidth=2,
                label=name,
            )
        if summary.breakeven == "crossed" and summary.breakeven_rate is not None:
            itl.axvline(
                summary.breakeven_rate,
                color=BREAKEVEN_COLOR,
                linestyle="--",
                linewidth=1,
                label=f"breakeven {summary.breakeven_rate:.2f} req/s",
            )
        itl.set_xlim(left=0)
        itl.set_ylim(bottom=0)
        itl.set_xlabel("request rate (req/s)")
        itl.set_ylabel("ITL p50 (ms)")
        itl.set_title("Inter-token latency vs request rate", fontsize=10, loc="left")
        itl.grid(color="#eeeeee")
        itl.legend(loc="upper left", frameon=False)
        if with_bars:
            assert acceptance is not None
            bars = axes[1]
            positions = list(range(len(acceptance.per_position)))
            bars.bar(positions, acceptance.per_position, width=0.7, color=SPECULATOR_COLOR)
            bars.set_ylim(0, 1)
            bars.set_xticks(positions)
            bars.set_xlabel("draft position")
            bars.set_ylabel("acceptance rate")
            length = acceptance.mean_acceptance_length
            bars.set_title(
                "Acceptance per draft position"
                + (f" (mean acceptance length {length:.2f})" if length is not None else ""),
                fontsize=10,
                loc="left",
            )
        numbers = axes[-1]
        numbers.axis("off")
        if rows:
            cols = ["rate (req/s)", "ITL p50 base", "ITL p50 spec", "TTFT p50 base", "TTFT p50 spec",
                    "out tok/s base", "out tok/s spec", "speed-up"]  # fmt: skip
            table = numbers.table(cellText=rows, colLabels=cols, loc="upper center", cellLoc="right")
            table.auto_set_font_size(False)
            table.set_fontsize(8)
        numbers.set_title(
            "Numbers (latencies in ms; baseline at the speculator's rates)", fontsize=10, loc="left"
        )
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp, dpi=dpi, format="png", facecolor="white")
        tmp.replace(path)
    finally:
        plt.close(fig)
    return path
