"""`speculators benchmark` and the scenario it hands GuideLLM: flags that make no run fail before anything
is sent, naming the flag; a report is written under a temporary name then renamed, and a run whose report
is there is skipped; the compact summary of `speculators report` fits a termination message.

GuideLLM itself runs in tests/bench; here a few-line script stands in for it (named so below) where only
the file handling is under test."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from speculators_core.bench import guidellm
from speculators_core.bench.speedup import COLUMNS, RateComparison, RatePoint, SpeedupSummary
from speculators_core.cli.common import TERMINATION_MESSAGE_LIMIT, write_summary
from speculators_core.cli.main import main


def run(**kw) -> guidellm.Run:
    base = {"target": "http://x:8000", "model": "m", "data": guidellm.Data(32, 16)}
    return guidellm.Run(**{**base, **kw})


def test_scenario_holds_guidellm_0_8_keys(tmp_path: Path) -> None:
    spec = run(profile="constant", rates=(1.0, 4.0), max_seconds=30, max_requests=100, warmup_seconds=5)
    scenario = spec.scenario(tmp_path / "out.json")["spec"]
    assert scenario["backend"] == {"kind": "openai_http", "target": "http://x:8000", "model": "m"}
    assert scenario["data"] == [{"kind": "synthetic_text", "prompt_tokens": 32, "output_tokens": 16}]
    assert scenario["profile"] == {
        "kind": "constant",
        "rate": [1.0, 4.0],
        "warmup": {"value": 5, "mode": "prefer_duration"},
    }
    assert scenario["constraints"] == [
        {"kind": "max_duration", "seconds": 30},
        {"kind": "max_requests", "count": 100},
    ]
    assert scenario["outputs"] == [{"kind": "json", "path": str(tmp_path / "out.json")}]
    assert run(profile="sweep", sweep_size=5).scenario(tmp_path / "o.json")["spec"]["profile"] == {
        "kind": "sweep",
        "sweep_size": 5,
    }


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            guidellm.Data(hub_id="philschmid/mt-bench"),
            {"kind": "huggingface", "source": "philschmid/mt-bench"},
        ),
        (guidellm.Data(path="/d/chat.jsonl"), {"kind": "json_file", "path": "/d/chat.jsonl"}),
        (guidellm.Data(path="/d/prompts.parquet"), {"kind": "parquet_file", "path": "/d/prompts.parquet"}),
        (guidellm.Data(path="/d/saved"), {"kind": "huggingface", "source": "/d/saved"}),
    ],
)
def test_data_kinds(data: guidellm.Data, expected: dict) -> None:
    assert data.spec() == expected


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"profile": "constant"}, "--profile constant needs --rate"),
        ({"profile": "sweep", "rates": (1.0,)}, "--rate applies to --profile constant or poisson"),
        ({"max_seconds": None}, "set --max-seconds or --max-requests"),
        ({"profile": "sweep", "sweep_size": 2}, "--sweep-size must be at least 3"),
        ({"data": guidellm.Data(0, 16)}, "--prompt-tokens and --output-tokens"),
    ],
)
def test_bad_options_name_the_flag(kw: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(guidellm.ScenarioError, match=message):
        run(**kw).scenario(tmp_path / "o.json")


def test_cli_refuses_before_sending_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    base = ["benchmark", "--target", "http://127.0.0.1:9", "--model", "m", "--out", str(out)]
    assert main([*base, "--profile", "poisson", "--max-seconds", "5"]) == 2
    assert "--profile poisson needs --rate" in capsys.readouterr().err
    assert main([*base, "--max-seconds", "5", "--metrics-url", "http://127.0.0.1:9/metrics"]) == 2
    assert "--metrics-url and --acceptance-out go together" in capsys.readouterr().err
    assert not out.exists()


GUIDELLM_STANDIN = """\
import json, sys
scenario = json.load(open(sys.argv[sys.argv.index("--scenario") + 1]))
path = scenario["spec"]["outputs"][0]["path"]
if "{fail}" == "yes":
    open(path, "w").write('{{"benchmarks": [')  # killed mid-write
    sys.exit(1)
json.dump({{"benchmarks": [{{"config": {{}}}}]}}, open(path, "w"))
"""


def _standin(tmp_path: Path, fail: bool) -> str:
    """A stand-in for the `guidellm` command (only the files it writes matter here)."""
    script = tmp_path / f"guidellm_standin_{'fail' if fail else 'ok'}.py"
    script.write_text(GUIDELLM_STANDIN.format(fail="yes" if fail else "no"))
    return f"{sys.executable} {script}"


def test_a_report_is_renamed_into_place_and_a_measured_run_is_skipped(tmp_path: Path) -> None:
    out = tmp_path / "results" / "speculator.json"
    with pytest.raises(RuntimeError, match="without a report"):
        guidellm.run(run(), out, _standin(tmp_path, fail=True))
    assert not out.exists()  # the half-written report kept its temporary name
    assert guidellm.run(run(), out, _standin(tmp_path, fail=False)) is True
    assert guidellm.is_report(out)
    assert json.loads((out.parent / "speculator.scenario.json").read_text())["spec"]["outputs"][0][
        "path"
    ].endswith(".speculator.tmp.json")
    assert guidellm.run(run(), out, _standin(tmp_path, fail=True)) is False  # there already: not run


def test_compact_summary_of_thirty_rates_fits_a_termination_message(tmp_path: Path) -> None:
    point = RatePoint("constant", 1.0, 1.0, 1.0, 3.3, 12.3456, 15.4321, 123.456, 234.567, 1234.567, 100)
    rates = [
        RateComparison(1.2345 * i, "constant", point, 23.4567, 28.9, 120.1, 240.2, 999.9, 1.9012)
        for i in range(30)
    ]
    summary = SpeedupSummary(rates, 1.9012, 17.345, "crossed", [point] * 30, [point] * 30)
    compact = summary.compact()
    assert compact["columns"] == list(COLUMNS) and len(compact["rates"]) == 30
    assert compact["rates"][1] == [
        "constant",
        1.234,
        1.901,
        23.46,
        28.9,
        120.1,
        240.2,
        999.9,
        12.35,
        15.43,
        123.5,
        234.6,
        1235.0,
    ]
    path = tmp_path / "msg"
    write_summary(path, {"step": "benchmark", **compact, "acceptance": {"perPosition": [0.8] * 16}})
    text = path.read_text()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    assert len(json.loads(text)["rates"]) == 30  # nothing had to be cut


def test_builtin_prompts_become_a_guidellm_file_with_the_asked_length(tmp_path: Path) -> None:
    path = guidellm.builtin_prompts("code", 64, tmp_path / "speculator.json")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 32 and all(r["output_tokens_count"] == 64 and r["prompt"] for r in rows)
    assert guidellm.Data(path=str(path)).spec() == {"kind": "json_file", "path": str(path)}
    with pytest.raises(guidellm.ScenarioError, match="use one of chat, code"):
        guidellm.builtin_prompts("poems", 64, tmp_path / "x.json")
