"""`speculators report RESULTS`: the speed-up report (HTML, PNG, summary JSON) from GuideLLM's reports.

RESULTS is a directory holding `baseline.json` and `speculator.json` (GuideLLM's `--output kind=json`),
and optionally `acceptance.json` (`{"perPosition": [...], "meanAcceptanceLength": x}`, the served draft's
live acceptance during the run). The report is written next to them unless --out says elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from speculators_core.cli.common import ExitCode, UserError, write_summary

NAME = "report"
HELP = "render the baseline-vs-speculator speed-up report (HTML + PNG) from GuideLLM's JSON reports"

# Headless Chromium renders the PNG from the very page (one source for both); without a browser (the
# runtime image has none) matplotlib draws the same figures from the same summary.
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
RENDERERS = ("auto", "browser", "matplotlib")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "results", metavar="RESULTS", type=Path, help="directory with baseline.json, speculator.json"
    )
    parser.add_argument("--out", type=Path, help="where to write report.html, report.png, summary.json")
    parser.add_argument(
        "--baseline", type=Path, help="GuideLLM report of the baseline (default RESULTS/baseline.json)"
    )
    parser.add_argument(
        "--speculator", type=Path, help="GuideLLM report of the speculator (default RESULTS/speculator.json)"
    )
    parser.add_argument("--title", default="Speculative decoding: baseline vs speculator")
    parser.add_argument(
        "--png",
        choices=("auto", "always", "never"),
        default="auto",
        help="report.png: auto (when a renderer is at hand), always (fail without one), never",
    )
    parser.add_argument(
        "--png-renderer",
        choices=RENDERERS,
        default=os.environ.get("SPECULATORS_PNG_RENDERER", "auto"),
        help="who draws report.png: browser (a screenshot of the page), matplotlib (the `report` extra), "
        "auto (a browser when one is found, else matplotlib) (env SPECULATORS_PNG_RENDERER)",
    )
    parser.add_argument(
        "--browser",
        default=os.environ.get("SPECULATORS_BROWSER"),
        help="browser binary for the PNG (env SPECULATORS_BROWSER; default: the first of "
        f"{', '.join(BROWSERS)} on PATH)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary JSON on stdout")
    parser.add_argument(
        "--summary-path",
        metavar="F",
        help="also write the compact summary here (the benchmark Job's termination message)",
    )


def find_browser(explicit: str | None = None) -> str | None:
    if explicit:
        return shutil.which(explicit) or (explicit if Path(explicit).is_file() else None)
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def choose_renderer(choice: str, browser: str | None) -> str | None:
    """A browser binary, "matplotlib", or None when the choice has nothing to draw with."""
    if choice in ("auto", "browser") and (found := find_browser(browser)):
        return found
    if choice in ("auto", "matplotlib"):
        from speculators_core.bench.report_png import available

        return "matplotlib" if available() else None
    return None


def screenshot(browser: str, page: Path, png: Path, width: int = 1100, height: int = 1400) -> None:
    """The page as PNG (written then renamed)."""
    tmp = png.with_name(f".{png.name}.tmp.png")
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",  # containers without user namespaces (restricted pods) cannot sandbox
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--screenshot={tmp}",
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not tmp.exists():
        raise UserError(f"{browser} could not render {page} as PNG: {proc.stderr[-2000:]}", ExitCode.FAILURE)
    tmp.replace(png)


def run(args: argparse.Namespace) -> int:
    from speculators_core.bench.report import Acceptance, write_report
    from speculators_core.bench.speedup import ReportError, compare, load_points

    results: Path = args.results
    baseline = args.baseline or results / "baseline.json"
    speculator = args.speculator or results / "speculator.json"
    for flag, path in (("--baseline", baseline), ("--speculator", speculator)):
        if not path.is_file():
            raise UserError(
                f"{path} does not exist: RESULTS must hold GuideLLM's JSON report of each server "
                f"(or pass {flag} FILE)"
            )
    try:
        summary = compare(load_points(baseline), load_points(speculator))
    except ReportError as exc:
        raise UserError(str(exc), ExitCode.INCOMPATIBLE) from exc
    acceptance = None
    accept_path = results / "acceptance.json"
    if accept_path.is_file():
        try:
            acceptance = Acceptance.from_dict(json.loads(accept_path.read_text()))
        except (json.JSONDecodeError, ValueError) as exc:
            raise UserError(f"{accept_path}: {exc}") from exc
    out: Path = args.out or results
    files = write_report(out, summary, args.title, acceptance)
    png = out / "report.png"
    if args.png != "never":
        renderer = choose_renderer(args.png_renderer, args.browser)
        if renderer is None and args.png == "always":
            raise UserError(
                f"--png always: no renderer for --png-renderer {args.png_renderer} (a browser: one of "
                f"{', '.join(BROWSERS)} on PATH or --browser; matplotlib: pip install "
                "'speculators-operator[report]')"
            )
        if renderer == "matplotlib":
            from speculators_core.bench.report_png import render_png

            files["png"] = render_png(png, summary, args.title, acceptance)
        elif renderer is not None:
            screenshot(renderer, files["html"], png)
            files["png"] = png
    compact = {"step": "benchmark", **summary.compact(), "files": sorted(p.name for p in files.values())}
    if acceptance is not None:
        compact["acceptance"] = {
            "meanAcceptanceLength": acceptance.mean_acceptance_length,
            "perPosition": list(acceptance.per_position),
        }
    write_summary(args.summary_path, compact)
    if args.json:
        json.dump(summary.to_dict(), sys.stdout)
        sys.stdout.write("\n")
    else:
        for kind, path in files.items():
            print(f"{kind}: {path}")
    return ExitCode.OK
