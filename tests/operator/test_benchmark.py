"""SpeculatorBenchmark without a cluster: the baseline is the Speculator's own Deployment minus speculation,
the Job's commands parse with the real CLI, and status walks WaitingForSpeculator -> StartingBaseline ->
Running -> Succeeded/Failed from observed children only, dropping the baseline when the run ends."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from spd_testlib import as_observed_job, benchmark, speculator, terminated_pod

from speculators_core.bench.speedup import COLUMNS
from speculators_core.cli.main import build_parser
from speculators_operator import constants as c
from speculators_operator.api.common import ModelSource
from speculators_operator.render import benchmark as rb
from speculators_operator.render import speculator as rs
from speculators_operator.render.common import Images
from speculators_operator.status.benchmark import BenchmarkObserved, derive_benchmark

IMAGES = Images()
DRAFT = "hf://RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3"


def ready_speculator(**spec: Any) -> dict[str, Any]:
    body = speculator("llama-spd", method="eagle3", numSpeculativeTokens=3, **spec)
    body["status"] = {
        "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": ""}],
        "draft": {"uri": DRAFT, "method": "eagle3", "numSpeculativeTokens": 3},
        "acceptance": {"perPosition": [0.8, 0.55, 0.3], "meanAcceptanceLength": 2.65},
    }
    return body


def ready(dep: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dep)
    out["metadata"].update(generation=1, uid="uid-baseline")
    out["status"] = {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1}
    return out


def names(objs: list[dict[str, Any]]) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in objs]


def conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {x["type"]: (x["status"], x["reason"]) for x in status["conditions"]}


def summary_message(rows: list[list[Any]], **extra: Any) -> str:
    return json.dumps({"step": "benchmark", "columns": list(COLUMNS), "rates": rows, **extra})


ROW = ["constant", 1.0, 1.9, 20.0, 24.0, 80.0, 95.0, 48.0, 10.5, 13.0, 82.0, 99.0, 91.0]


def run_to_job(bench: dict[str, Any], spd: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Reconcile until the Job is created: (baseline as observed ready, the Job, the last plan)."""
    plan = derive_benchmark(bench, BenchmarkObserved(speculator=spd), IMAGES)
    dep = ready(plan.apply[0]) if plan.apply else None
    plan = derive_benchmark(bench, BenchmarkObserved(speculator=spd, deployment=dep), IMAGES)
    job = next(o for o in plan.create if o["kind"] == "Job")
    return dep or {}, job, plan


def test_baseline_is_the_speculators_deployment_without_the_draft() -> None:
    spd = ready_speculator(
        vllm={"extraArgs": ["--enable-prefix-caching"], "maxModelLen": 8192},
        resources={"limits": {"nvidia.com/gpu": 2}},
        traffic={"capture": {"enabled": True}},
        cache={"size": "50Gi"},
        replicas=3,
    )
    ctx = rb.BenchmarkContext.of(benchmark(), IMAGES)
    served = rs.deployment(
        rs.SpeculatorContext.of(spd, IMAGES), rs.ResolvedDraft(ModelSource(uri=DRAFT), "eagle3", 3)
    )
    base = rb.baseline_deployment(ctx, spd, rs.ResolvedDraft(ModelSource(uri=DRAFT), "eagle3", 3))

    served_vllm = next(x for x in served["spec"]["template"]["spec"]["containers"] if x["name"] == "vllm")
    pod = base["spec"]["template"]["spec"]
    assert [x["name"] for x in pod["containers"]] == ["vllm"]  # no capture proxy
    vllm = pod["containers"][0]
    i = served_vllm["args"].index("--speculative-config")
    assert vllm["args"] == served_vllm["args"][:i] + served_vllm["args"][i + 2 :]
    assert "--enable-prefix-caching" in vllm["args"] and "--max-model-len" in vllm["args"]
    assert (vllm["image"], vllm["resources"]) == (served_vllm["image"], served_vllm["resources"])
    assert [x["name"] for x in pod.get("initContainers", [])] == ["fetch-verifier"]
    assert {"name": "models", "emptyDir": {}} in pod["volumes"]  # not the Speculator's RWO cache claim
    assert base["spec"]["replicas"] == 1
    # Its pods are not the Speculator's: neither its Service nor its scrapes select them.
    labels = base["spec"]["template"]["metadata"]["labels"]
    assert c.LABEL_SPECULATOR not in labels and labels[c.LABEL_BENCHMARK] == "bench"
    assert not all(labels.get(k) == v for k, v in rs.service_selector(rs.SpeculatorContext.of(spd)).items())
    assert base["metadata"]["ownerReferences"][0]["uid"] == "uid-bench"
    assert base["metadata"]["name"] == "bench-baseline"


def test_waits_for_the_speculator_then_starts_the_baseline_then_the_job() -> None:
    bench = benchmark()
    plan = derive_benchmark(bench, BenchmarkObserved(), IMAGES)
    assert plan.status["phase"] == "WaitingForSpeculator"
    assert conds(plan.status)["SpeculatorReady"] == ("Unknown", "SpeculatorNotFound")
    assert conds(plan.status)["Ready"][0] == "Unknown"  # waiting is not a failure
    assert names(plan.create) == ["PersistentVolumeClaim/bench-results"] and not plan.apply

    not_ready = ready_speculator()
    not_ready["status"]["conditions"][0].update(status="Unknown", reason="Deploying")
    plan = derive_benchmark(bench, BenchmarkObserved(speculator=not_ready), IMAGES)
    assert plan.status["phase"] == "WaitingForSpeculator" and not plan.apply

    spd = ready_speculator()
    plan = derive_benchmark(bench, BenchmarkObserved(speculator=spd), IMAGES)
    assert plan.status["phase"] == "StartingBaseline"
    assert names(plan.apply) == ["Deployment/bench-baseline", "Service/bench-baseline"]
    assert not [o for o in plan.create if o["kind"] == "Job"]

    _, _, plan = run_to_job(bench, spd)
    assert plan.status["phase"] == "Running"
    assert plan.status["speculatorUrl"] == "http://llama-spd.ns.svc:8000"
    assert plan.status["baselineUrl"] == "http://bench-baseline.ns.svc:8000"
    assert plan.status["results"] == {"uri": "pvc://bench-results/bench"}


def _container(job: dict[str, Any], name: str) -> dict[str, Any]:
    pod = job["spec"]["template"]["spec"]
    return next(x for x in pod.get("initContainers", []) + pod["containers"] if x["name"] == name)


def test_the_jobs_commands_parse_with_the_real_cli() -> None:
    bench = benchmark(
        rate={"type": "constant", "rates": [1, 2.5, 8]},
        dataset={"uri": "pvc://prompts/chat/mt-bench.jsonl"},
        maxSeconds=90,
        maxRequests=500,
    )
    _, job, _ = run_to_job(bench, ready_speculator())
    parser = build_parser()
    spec_args = parser.parse_args(
        _container(job, "bench-speculator")["command"][1:] + _container(job, "bench-speculator")["args"]
    )
    base_args = parser.parse_args(
        _container(job, "bench-baseline")["command"][1:] + _container(job, "bench-baseline")["args"]
    )
    report = _container(job, "report")
    report_args = parser.parse_args(report["command"][1:] + report["args"])
    assert (spec_args.command, base_args.command, report_args.command) == ("benchmark", "benchmark", "report")
    assert spec_args.target == "http://llama-spd.ns.svc:8000"
    assert base_args.target == "http://bench-baseline.ns.svc:8000"
    assert spec_args.model == base_args.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert (
        str(spec_args.out) == "/results/bench/speculator.json"
        and str(base_args.out) == "/results/bench/baseline.json"
    )
    assert spec_args.rate == base_args.rate == [1.0, 2.5, 8.0] and spec_args.profile == "constant"
    assert (spec_args.max_seconds, spec_args.max_requests) == (90, 500)
    assert spec_args.data_path == "/mnt/pvc/prompts/chat/mt-bench.jsonl"
    assert spec_args.tokenizer == "meta-llama/Llama-3.1-8B-Instruct"  # the verifier's hub id
    # One Speculator pod: the acceptance over the run from vLLM's counters through its Service.
    assert spec_args.metrics_url == "http://llama-spd.ns.svc:8000/metrics"
    assert base_args.metrics_url is None
    assert str(report_args.results) == "/results/bench" and report_args.summary_path == c.TERMINATION_LOG
    pod = job["spec"]["template"]["spec"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"bench-results", "prompts"}
    assert job["spec"]["activeDeadlineSeconds"] == bench["spec"]["timeoutSeconds"]
    # The verifier's Hub token reaches GuideLLM (gated tokenizers) by reference only.
    spd = ready_speculator(
        verifier={"uri": "hf://meta-llama/Llama-3.1-8B-Instruct", "secretRef": {"name": "hf"}}
    )
    _, job, _ = run_to_job(benchmark(), spd)
    assert _container(job, "bench-speculator")["envFrom"] == [{"secretRef": {"name": "hf"}}]


def test_several_speculator_pods_take_the_live_window_for_acceptance() -> None:
    spd = ready_speculator(replicas=2)
    _, job, _ = run_to_job(benchmark(), spd)
    assert "--metrics-url" not in _container(job, "bench-speculator")["args"]


def test_success_writes_the_summary_and_drops_the_baseline() -> None:
    bench, spd = benchmark(), ready_speculator(replicas=2)
    dep, job, plan = run_to_job(bench, spd)
    bench["status"] = plan.status
    done = as_observed_job(job, "Complete", succeeded=1)
    row2 = ["constant", 8.0, 0.9, 30.0, 40.0, 90.0, 99.0, 300.0, 33.3, 45.0, 95.0, 120.0, 280.0]
    pod = terminated_pod(
        "bench-benchmark",
        "report",
        message=summary_message([ROW, row2], speedupAtLowestRate=1.9, breakevenRate=6.1, breakeven="crossed"),
    )
    svc = rb.baseline_service(rb.BenchmarkContext.of(bench), 8000)
    observed = BenchmarkObserved(speculator=spd, deployment=dep, service=svc, job=done, pods=[pod])
    plan = derive_benchmark(bench, observed, IMAGES)
    status = plan.status
    assert status["phase"] == "Succeeded" and conds(status)["Ready"] == ("True", "Succeeded")
    assert (status["speedupAtLowestRate"], status["breakevenRate"], status["breakeven"]) == (
        1.9,
        6.1,
        "crossed",
    )
    assert status["rates"][0] == {
        "strategy": "constant",
        "requestRate": 1.0,
        "speedup": 1.9,
        "baseline": {
            "itlP50Ms": 20.0,
            "itlP95Ms": 24.0,
            "ttftP50Ms": 80.0,
            "ttftP95Ms": 95.0,
            "outputTokensPerSecond": 48.0,
        },
        "speculator": {
            "itlP50Ms": 10.5,
            "itlP95Ms": 13.0,
            "ttftP50Ms": 82.0,
            "ttftP95Ms": 99.0,
            "outputTokensPerSecond": 91.0,
        },
    }
    assert len(status["rates"]) == 2
    # Two Speculator pods: the run could not read the counters itself; the live window stands in.
    assert status["acceptance"] == {
        "meanAcceptanceLength": 2.65,
        "perPosition": [0.8, 0.55, 0.3],
        "source": "speculator",
    }
    assert status["results"]["report"] == "pvc://bench-results/bench/report.html"
    assert "stops paying above 6.1 req/s" in conds_message(status, "Ready")
    assert names(plan.delete) == ["Deployment/bench-baseline", "Service/bench-baseline"]
    assert not plan.apply and not [o for o in plan.create if o["kind"] == "Job"]
    assert [e.reason for e in plan.events] == ["Succeeded"]

    # Finished: the Job goes by TTL, the Speculator changes; nothing is created again, status stays.
    bench["status"] = status
    later = derive_benchmark(bench, BenchmarkObserved(speculator=None), IMAGES)
    assert not later.create and not later.apply and not later.delete and not later.events
    assert later.status == status


def test_acceptance_measured_by_the_run_wins() -> None:
    bench, spd = benchmark(), ready_speculator()
    _, job, plan = run_to_job(bench, spd)
    bench["status"] = plan.status
    acceptance = {"meanAcceptanceLength": 2.7, "perPosition": [0.81, 0.57, 0.33]}
    pod = terminated_pod("bench-benchmark", "report", message=summary_message([ROW], acceptance=acceptance))
    done = as_observed_job(job, "Complete", succeeded=1)
    plan = derive_benchmark(bench, BenchmarkObserved(speculator=spd, job=done, pods=[pod]), IMAGES)
    assert plan.status["acceptance"] == {**acceptance, "source": "benchmark"}


@pytest.mark.parametrize("how", ["job", "baseline"])
def test_failure_is_final_and_drops_the_baseline(how: str) -> None:
    bench, spd = benchmark(), ready_speculator()
    dep, job, plan = run_to_job(bench, spd)
    bench["status"] = plan.status
    if how == "job":
        failed = as_observed_job(job, "Failed", failed=3)
        pod = terminated_pod(
            "bench-benchmark", "bench-baseline", exit_code=1, message="error: guidellm exited 1"
        )
        observed = BenchmarkObserved(speculator=spd, deployment=dep, job=failed, pods=[pod])
        reason = "BenchmarkFailed"
    else:
        dep["status"]["conditions"] = [
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": "too slow",
            }
        ]
        dep["status"]["readyReplicas"] = 0
        observed = BenchmarkObserved(speculator=spd, deployment=dep)
        reason = "BaselineFailed"
    plan = derive_benchmark(bench, observed, IMAGES)
    assert plan.status["phase"] == "Failed"
    assert conds(plan.status)["Ready"] == ("False", reason)
    assert names(plan.delete) == ["Deployment/bench-baseline"] and not plan.apply
    if how == "job":
        assert "guidellm exited 1" in conds_message(plan.status, "Benchmarked")
    bench["status"] = plan.status
    again = derive_benchmark(bench, BenchmarkObserved(speculator=spd), IMAGES)
    assert again.status["phase"] == "Failed" and not again.create and not again.apply


def conds_message(status: dict[str, Any], type_: str) -> str:
    return next(x["message"] for x in status["conditions"] if x["type"] == type_)


def test_an_existing_baseline_url_needs_no_deployment() -> None:
    bench = benchmark(baseline={"create": False, "url": "http://llama-base.shared:8000/"})
    plan = derive_benchmark(bench, BenchmarkObserved(speculator=ready_speculator()), IMAGES)
    assert plan.status["phase"] == "Running" and not plan.apply
    job = next(o for o in plan.create if o["kind"] == "Job")
    args = _container(job, "bench-baseline")["args"]
    assert args[args.index("--target") + 1] == "http://llama-base.shared:8000"
    assert conds(plan.status)["BaselineReady"] == ("True", "External")


def test_a_builtin_prompt_set() -> None:
    _, job, _ = run_to_job(benchmark(dataset={"builtin": "code", "outputTokens": 64}), ready_speculator())
    args = build_parser().parse_args(["benchmark", *_container(job, "bench-speculator")["args"]])
    assert (args.data_builtin, args.output_tokens, args.data_path, args.data_hub_id) == (
        "code",
        64,
        None,
        None,
    )
