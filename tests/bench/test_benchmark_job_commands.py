"""The benchmark Job's own commands, for real: the operator renders the SpeculatorBenchmark's Job, and its
three containers (`speculators benchmark` against the speculator, then the baseline, then `speculators
report`) run here as rendered, with only what a pod has and a laptop has not swapped in: the servers' URLs
(two speculation-aware vLLM stand-ins on loopback), the results volume (a temporary directory), the
tokenizer (a tiny local one) and the termination-message file. The report's summary then goes through the
operator's status code exactly as the kubelet would hand it over.

So GuideLLM accepts the scenario the Job builds, the acceptance over the run comes from the stand-in's
vLLM counters, a retried pod does not measure twice, the report draws report.png without a
browser (as in the runtime image), and status shows the speed-up the model predicts.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import StandInServer
from localrun.openai_speculative_standin import Model

from harness.png import png_pixels
from speculators_core.bench.report import BASELINE_COLOR, SPECULATOR_COLOR
from speculators_operator.api.benchmark import SpeculatorBenchmark
from speculators_operator.api.speculator import Speculator
from speculators_operator.render import benchmark as rb
from speculators_operator.render.common import Images
from speculators_operator.status.benchmark import BenchmarkObserved, derive_benchmark

pytestmark = pytest.mark.slow

PROMPT, OUTPUT = 32, 32
RATES = [1.0, 5.0]
MODEL = Model()  # k 3, conditional acceptance 0.8/0.7/0.6


def _stored(kind: type, body: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server stores it (schema defaults filled in)."""
    out = copy.deepcopy(body)
    out["spec"] = kind.model_validate(body).spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    out["metadata"].update(namespace="ns", uid=f"uid-{body['metadata']['name']}", generation=1)
    return out


SPECULATOR = _stored(
    Speculator,
    {
        "apiVersion": "speculators.ai/v1alpha1",
        "kind": "Speculator",
        "metadata": {"name": "llama"},
        "spec": {
            "verifier": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
            "draft": {"uri": "hf://RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3"},
            "method": "eagle3",
            "numSpeculativeTokens": 3,
        },
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Ready",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            "draft": {"uri": "hf://RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3", "method": "eagle3"},
        },
    },
)
BENCHMARK = _stored(
    SpeculatorBenchmark,
    {
        "apiVersion": "speculators.ai/v1alpha1",
        "kind": "SpeculatorBenchmark",
        "metadata": {"name": "bench"},
        "spec": {
            "speculatorRef": {"name": "llama"},
            "dataset": {"synthetic": {"promptTokens": PROMPT, "outputTokens": OUTPUT}},
            "rate": {"type": "constant", "rates": RATES},
            "maxSeconds": 10,
            "warmupSeconds": 3,
        },
    },
)


def _rendered_job() -> tuple[dict[str, Any], dict[str, Any]]:
    """The Job as the operator creates it once the baseline is ready, and the status at that point."""
    bench = copy.deepcopy(BENCHMARK)
    plan = derive_benchmark(bench, BenchmarkObserved(speculator=SPECULATOR), Images())
    dep = copy.deepcopy(plan.apply[0])
    dep["metadata"].update(generation=1, uid="uid-base")
    dep["status"] = {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1}
    plan = derive_benchmark(bench, BenchmarkObserved(speculator=SPECULATOR, deployment=dep), Images())
    return next(o for o in plan.create if o["kind"] == "Job"), plan.status


def _local(cmd: list[str], swap: dict[str, str], python: Path) -> list[str]:
    """A container's command as it runs here: `speculators` from .venv-bench, the pod's paths and URLs
    replaced by their local stand-ins."""
    out = [str(python), "-m", "speculators_core.cli"]
    for arg in cmd[1:]:
        for old, new in swap.items():
            arg = arg.replace(old, new)
        out.append(arg)
    return out


def test_the_jobs_commands_measure_both_servers_and_status_shows_the_speedup(
    bench_python: Path, tokenizer_dir: Path, tmp_path: Path
) -> None:
    job, status = _rendered_job()
    pod = job["spec"]["template"]["spec"]
    containers = {x["name"]: x for x in [*pod["initContainers"], *pod["containers"]]}
    assert list(containers) == ["bench-speculator", "bench-baseline", "report"]
    results = tmp_path / "results"
    termination = tmp_path / "termination-log"
    speculator, baseline = StandInServer(MODEL), StandInServer(MODEL.baseline)
    try:
        swap = {
            status["speculatorUrl"]: speculator.url,
            status["baselineUrl"]: baseline.url,
            rb.RESULTS_MOUNT: str(results),
            "/dev/termination-log": str(termination),
            "meta-llama/Llama-3.1-8B-Instruct": "standin",  # served model name (and default tokenizer)
        }
        guidellm = ["--guidellm", f"{bench_python} -m guidellm"]
        for name in ("bench-speculator", "bench-baseline"):
            cmd = _local(containers[name]["command"] + containers[name]["args"], swap, bench_python)
            cmd[cmd.index("--tokenizer") + 1] = str(tokenizer_dir)
            proc = subprocess.run([*cmd, *guidellm], capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        measured = (results / "bench" / "speculator.json").stat().st_mtime_ns
        # A retried pod (same volume) does not measure again.
        cmd = _local(
            containers["bench-speculator"]["command"] + containers["bench-speculator"]["args"],
            swap,
            bench_python,
        )
        proc = subprocess.run([*cmd, *guidellm], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "already measured; skipped" in proc.stdout, proc.stderr
        assert (results / "bench" / "speculator.json").stat().st_mtime_ns == measured
    finally:
        speculator.close()
        baseline.close()

    # The report as rendered, with what the runtime image has: no browser anywhere, so matplotlib
    # draws report.png.
    report = containers["report"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECULATORS_")}
    env["PATH"] = str(tmp_path / "no-browsers")
    proc = subprocess.run(
        _local(report["command"] + report["args"], swap, bench_python),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    written = {
        "speculator.json",
        "baseline.json",
        "acceptance.json",
        "report.html",
        "report.png",
        "summary.json",
    }
    assert written <= {p.name for p in (results / "bench").iterdir()}
    seen = set(png_pixels(results / "bench" / "report.png")[2])
    for color in (BASELINE_COLOR, SPECULATOR_COLOR):
        assert tuple(int(color[i : i + 2], 16) for i in (1, 3, 5)) in seen, f"no {color} pixel in the PNG"
    message = termination.read_text()
    assert "report.png" in json.loads(message)["files"]
    assert len(message.encode()) <= 4096  # what a kubelet keeps of a termination message

    # The kubelet's hand-over: the report container's termination message on the finished pod.
    bench = copy.deepcopy(BENCHMARK)
    bench["status"] = status
    done = copy.deepcopy(job)
    done["metadata"]["uid"] = "uid-job"
    done["status"] = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
    finished = {
        "metadata": {
            "name": "bench-benchmark-x",
            "labels": {"batch.kubernetes.io/job-name": "bench-benchmark"},
        },
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "report", "state": {"terminated": {"exitCode": 0, "message": message}}}
            ],
        },
    }
    plan = derive_benchmark(
        bench, BenchmarkObserved(speculator=SPECULATOR, job=done, pods=[finished]), Images()
    )
    out = plan.status
    assert out["phase"] == "Succeeded", json.dumps(out["conditions"])
    assert [r["requestRate"] for r in out["rates"]] == RATES
    for rate, row in zip(RATES, out["rates"], strict=True):
        expected = MODEL.speedup_at_rate(rate, OUTPUT, PROMPT)
        assert row["speedup"] == pytest.approx(expected, rel=0.12), (rate, row)
        assert row["speculator"]["itlP50Ms"] < row["baseline"]["itlP50Ms"]
    assert out["speedupAtLowestRate"] == out["rates"][0]["speedup"]
    assert out["breakeven"] == "beyond-measured"  # both rates lie below the model's 8.7 req/s
    # Acceptance over the run, from the stand-in's vLLM counters: P(first i+1 drafts accepted).
    acceptance = out["acceptance"]
    assert acceptance["source"] == "benchmark"
    expected_pos = [0.8, 0.8 * 0.7, 0.8 * 0.7 * 0.6]
    assert acceptance["perPosition"] == pytest.approx(expected_pos, abs=0.05)
    assert acceptance["meanAcceptanceLength"] == pytest.approx(MODEL.mean_acceptance_length, abs=0.1)


def test_a_builtin_prompt_set_runs_through_guidellm(
    bench_python: Path, tokenizer_dir: Path, tmp_path: Path
) -> None:
    """`dataset.builtin`: the shipped prompts reach the server as they are, each answer as long as asked."""
    server = StandInServer(MODEL)
    out = tmp_path / "speculator.json"
    try:
        cmd = [
            str(bench_python), "-m", "speculators_core.cli", "benchmark",
            "--target", server.url, "--model", "standin", "--out", str(out),
            "--data-builtin", "code", "--output-tokens", "24",
            "--profile", "synchronous", "--max-requests", "6", "--tokenizer", str(tokenizer_dir),
            "--guidellm", f"{bench_python} -m guidellm",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    finally:
        server.close()
    bench = json.loads(out.read_text())["benchmarks"][0]
    assert bench["metrics"]["request_totals"]["successful"] == 6
    assert bench["metrics"]["output_token_count"]["successful"]["mean"] == 24
    prompts = (tmp_path / "speculator.prompts.jsonl").read_text().splitlines()
    assert len(prompts) == 32 and json.loads(prompts[0])["output_tokens_count"] == 24
