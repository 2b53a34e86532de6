"""`speculators report` on GuideLLM-shaped reports built here: the page's content and the CLI's errors
(tests/bench renders it in headless Chromium from the real GuideLLM's reports)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from test_bench_speedup import bench, write

from harness.png import png_pixels
from speculators_core.bench.report import BASELINE_COLOR, SPECULATOR_COLOR
from speculators_core.bench.report_png import BREAKEVEN_COLOR
from speculators_core.cli.main import main


def results(tmp_path: Path) -> Path:
    write(
        tmp_path,
        "baseline.json",
        [bench("constant", r, 10 * r, 10, i) for r, i in ((1, 20), (2, 22), (4, 26))],
    )
    write(
        tmp_path,
        "speculator.json",
        [bench("constant", r, 10 * r, 10, i) for r, i in ((1, 10), (2, 16), (4, 40))],
    )
    return tmp_path


def test_the_page_has_both_series_the_breakeven_and_the_numbers(tmp_path: Path) -> None:
    res = results(tmp_path)
    (res / "acceptance.json").write_text(json.dumps({"perPosition": [0.8, 0.5], "meanAcceptanceLength": 2.2}))
    assert main(["report", str(res), "--png", "never"]) == 0
    page = (res / "report.html").read_text()
    for name in ("baseline", "speculator"):
        tag = re.search(rf'<polyline[^>]*data-series="{name}"[^>]*points="([^"]+)"', page)
        assert tag is not None and len(tag.group(1).split()) == 3
    assert 'class="breakeven"' in page and "stops paying above 3.03 req/s" in page
    assert page.count('class="bar"') == 2 and "mean acceptance length 2.20" in page
    assert page.count("<tr>") == 4 and "2.00×" in page
    assert "<script" not in page and "http" not in page.split("<svg", 1)[1].replace("http://www.w3.org", "")
    summary = json.loads((res / "summary.json").read_text())
    assert summary["breakeven"] == "crossed" and summary["speedup_at_lowest_rate"] == 2.0


def test_missing_reports_and_bad_acceptance_name_the_file_and_the_fix(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path), "--png", "never"]) == 2
    err = capsys.readouterr().err
    assert "baseline.json does not exist" in err and "--baseline FILE" in err
    res = results(tmp_path)
    (res / "acceptance.json").write_text(json.dumps({"perPosition": "high"}))
    assert main(["report", str(res), "--png", "never"]) == 2
    assert "perPosition must be a list of numbers" in capsys.readouterr().err
    (res / "acceptance.json").unlink()
    assert main(["report", str(res), "--png", "always", "--png-renderer", "browser",
                 "--browser", "/nonexistent/chromium"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "no renderer for --png-renderer browser" in err and "--browser" in err
    assert not (res / "report.png").exists()


def test_without_a_browser_matplotlib_draws_the_png_with_both_series(tmp_path: Path, monkeypatch) -> None:
    # What the benchmark Job does in the runtime image: no browser anywhere, --png auto.
    monkeypatch.setenv("PATH", str(tmp_path / "no-browsers"))
    monkeypatch.delenv("SPECULATORS_BROWSER", raising=False)
    monkeypatch.delenv("SPECULATORS_PNG_RENDERER", raising=False)
    res = results(tmp_path)
    (res / "acceptance.json").write_text(json.dumps({"perPosition": [0.8, 0.5], "meanAcceptanceLength": 2.2}))
    summary_path = tmp_path / "termination-log"
    assert main(["report", str(res), "--summary-path", str(summary_path)]) == 0
    assert "report.png" in json.loads(summary_path.read_text())["files"]
    assert not list(res.glob(".*tmp*"))  # written then renamed
    width, height, pixels = png_pixels(res / "report.png")
    assert width >= 1000 and height >= 600
    seen = set(pixels)
    for color in (BASELINE_COLOR, SPECULATOR_COLOR, BREAKEVEN_COLOR):
        assert tuple(int(color[i : i + 2], 16) for i in (1, 3, 5)) in seen, f"no {color} pixel in the PNG"


def test_without_acceptance_or_a_crossing_the_png_leaves_them_out(tmp_path: Path) -> None:
    res = tmp_path
    write(res, "baseline.json", [bench("constant", r, 10 * r, 10, 20) for r in (1, 2)])
    write(res, "speculator.json", [bench("constant", r, 10 * r, 10, 10) for r in (1, 2)])
    assert main(["report", str(res), "--png", "always", "--png-renderer", "matplotlib"]) == 0
    seen = set(png_pixels(res / "report.png")[2])
    assert tuple(int(SPECULATOR_COLOR[i : i + 2], 16) for i in (1, 3, 5)) in seen
    assert tuple(int(BREAKEVEN_COLOR[i : i + 2], 16) for i in (1, 3, 5)) not in seen  # never crossed
