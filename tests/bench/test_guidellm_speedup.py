"""The real GuideLLM against the speculation-aware stand-in (a stand-in for vLLM, with and without a
speculator): the speed-up and the breakeven rate that speculators_core.bench.speedup derives from GuideLLM's
own reports are the ones the stand-in's timing model predicts; `speculators report` turns the same reports
into a page that headless Chromium renders with both series."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, StandInServer, chromium, run_guidellm
from localrun.openai_speculative_standin import Model

from harness.png import png_pixels
from speculators_core.bench.report import BASELINE_COLOR, SPECULATOR_COLOR
from speculators_core.bench.speedup import compare, load_points

pytestmark = pytest.mark.slow

PROMPT, OUTPUT = 32, 32
# Lowest far below the knee; then around the model's breakeven (8.66 req/s: 1.20 at 8, 0.89 at 9) and
# one above it. Short requests (32 tokens) let the batch settle within the warm-up.
RATES = [1.0, 5.0, 8.0, 9.0, 10.0]
MODEL = Model()  # k 3, conditional acceptance 0.8/0.7/0.6: mean acceptance length 2.696


def scenario(target: str, tokenizer: Path) -> dict:
    return {
        "spec": {
            "backend": {"kind": "openai_http", "target": target, "model": "standin"},
            "tokenizer": {"kind": "huggingface_auto", "model": str(tokenizer)},
            "data": [{"kind": "synthetic_text", "prompt_tokens": PROMPT, "output_tokens": OUTPUT}],
            "profile": {"kind": "constant", "rate": RATES, "warmup": 4},
            "constraints": [{"kind": "max_duration", "seconds": 12}],
        }
    }


@pytest.fixture(scope="module")
def results(bench_python: Path, tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GuideLLM's reports of both servers, in one RESULTS directory (the layout the benchmark Job writes)."""
    out = tmp_path_factory.mktemp("results")
    for name, server_model in (("baseline", MODEL.baseline), ("speculator", MODEL)):
        server = StandInServer(server_model)
        try:
            run_guidellm(bench_python, scenario(server.url, tokenizer_dir), out / f"{name}.json")
        finally:
            server.close()
    return out


def test_speedup_and_breakeven_from_guidellm_match_the_model(results: Path) -> None:
    assert 8 < MODEL.breakeven_rate(OUTPUT, PROMPT) < 9
    baseline, speculator = load_points(results / "baseline.json"), load_points(results / "speculator.json")
    assert [p.strategy for p in speculator] == ["constant"] * len(RATES)
    assert [p.target_rate for p in speculator] == RATES
    summary = compare(baseline, speculator)
    assert [r.request_rate for r in summary.rates] == RATES

    expected_low = MODEL.speedup_at_rate(RATES[0], OUTPUT, PROMPT)
    assert summary.speedup_at_lowest_rate == pytest.approx(expected_low, rel=0.15)
    assert expected_low > 1.5  # far from 1: a broken speculator could not pass by accident
    assert summary.breakeven == "crossed"
    assert summary.breakeven_rate == pytest.approx(MODEL.breakeven_rate(OUTPUT, PROMPT), rel=0.15)
    # ITL itself, not only the ratio, is the model's at the lowest rate.
    low = summary.rates[0]
    assert low.speculator.itl_p50_ms == pytest.approx(
        1000 * MODEL.itl_at_rate(RATES[0], OUTPUT, PROMPT), rel=0.2
    )


def test_report_renders_in_headless_chromium_with_both_series(results: Path, tmp_path: Path) -> None:
    browser = chromium()
    (results / "acceptance.json").write_text(
        json.dumps({"perPosition": [0.8, 0.56, 0.336], "meanAcceptanceLength": 2.696})
    )
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "speculators_core.cli", "report", str(results), "--out", str(out),
           "--png", "always", "--browser", browser]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["breakeven"] == "crossed" and len(summary["rates"]) == len(RATES)

    # The DOM after Chromium parsed and laid it out: both series, every rate a vertex, the bars.
    page = (out / "report.html").as_uri()
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    for name in ("baseline", "speculator"):
        tag = re.search(rf'<polyline[^>]*data-series="{name}"[^>]*>', dom)
        assert tag is not None, f"no {name} series in the rendered page"
        points = re.search(r'points="([^"]+)"', tag.group(0))
        assert points is not None and len(points.group(1).split()) == len(RATES), name
    assert dom.count('class="bar"') == 3
    assert 'id="numbers"' in dom and dom.count("<tr>") == len(RATES) + 1

    # The PNG shows both lines: pixels of each series' colour.
    width, height, pixels = png_pixels(out / "report.png")
    assert width > 600 and height > 400
    seen = set(pixels)
    for color in (BASELINE_COLOR, SPECULATOR_COLOR):
        rgb = tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
        assert rgb in seen, f"no {color} pixel in the PNG"
