"""`speculators report` on GuideLLM-shaped reports built here: the page's content and the CLI's errors
(tests/bench renders it in headless Chromium from the real GuideLLM's reports)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from test_bench_speedup import bench, write

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
    assert main(["report", str(res), "--png", "always", "--browser", "/nonexistent/chromium"]) == 2
    assert "no browser found" in capsys.readouterr().err
