"""SpeculatorBenchmark against the real control plane: it waits for its Speculator, stands up the baseline
(the real Deployment controller rolls it out on kwok nodes), runs the benchmark Job only once the baseline
is ready, takes the numbers from the report container's termination message into status and
`kubectl get`, deletes the baseline when the run ends, and refuses a changed spec.

The pods run on kwok nodes (a stand-in kubelet: no containers); the benchmark pod's termination message is
the compact summary `speculators report --summary-path` writes (the bench tier runs that command for real
against GuideLLM and a vLLM stand-in).
"""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import Kube, OperatorProcess
from kubernetes.client.exceptions import ApiException
from spd_testlib import API, HOLD, cond, speculator_body

from kubecluster import find_binaries
from speculators_core.bench.speedup import COLUMNS
from speculators_operator import constants as c

pytestmark = pytest.mark.kwok

ROWS = [
    ["constant", 1.0, 1.87, 20.0, 24.0, 80.0, 95.0, 48.0, 10.7, 13.0, 82.0, 99.0, 91.0],
    ["constant", 8.0, 0.93, 30.0, 40.0, 90.0, 99.0, 300.0, 32.3, 45.0, 95.0, 120.0, 280.0],
]
SUMMARY = {
    "step": "benchmark",
    "columns": list(COLUMNS),
    "rates": ROWS,
    "speedupAtLowestRate": 1.87,
    "breakevenRate": 7.2,
    "breakeven": "crossed",
    "acceptance": {"meanAcceptanceLength": 2.7, "perPosition": [0.8, 0.56, 0.34]},
}


def benchmark_body(name: str, speculator: str, **spec: object) -> dict:
    base = {
        "speculatorRef": {"name": speculator},
        "rate": {"type": "constant", "rates": [1, 8]},
        "maxSeconds": 30,
        "podMetadata": {"annotations": dict(HOLD)},
    }
    base.update(spec)
    return {"apiVersion": API, "kind": c.BENCHMARK_KIND, "metadata": {"name": name}, "spec": base}


def test_benchmark_runs_against_a_temporary_baseline(operator: OperatorProcess, k: Kube, cluster) -> None:
    # The benchmark comes first: it waits for a Speculator that does not exist yet.
    k.create(benchmark_body("sweep1", "served"))
    status = k.wait_phase(c.BENCHMARK_KIND, "sweep1", "WaitingForSpeculator")
    assert cond(status, "SpeculatorReady")["reason"] == "SpeculatorNotFound"
    assert cond(status, "Ready")["status"] == "Unknown"
    assert k.get("Deployment", "sweep1-baseline") is None

    k.create(speculator_body("served", method="eagle3", numSpeculativeTokens=3, vllm={"maxModelLen": 4096}))
    k.wait_phase("Speculator", "served", "Running")
    # The baseline: the Speculator's own vLLM arguments without --speculative-config, rolled out by the
    # Deployment controller; only then the Job.
    baseline = k.wait(lambda: k.get("Deployment", "sweep1-baseline"), what="baseline Deployment")
    served = k.get("Deployment", "served-vllm")
    base_args = baseline["spec"]["template"]["spec"]["containers"][0]["args"]
    served_args = served["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--speculative-config" in served_args and "--speculative-config" not in base_args
    assert base_args == [a for i, a in enumerate(served_args) if i not in (2, 3)]
    assert k.get("Service", "sweep1-baseline")["spec"]["selector"][c.LABEL_BENCHMARK] == "sweep1"
    # The Speculator's Service does not send traffic to the baseline's pods.
    spd_selector = ",".join(f"{key}={v}" for key, v in k.get("Service", "served")["spec"]["selector"].items())
    assert {p["metadata"]["name"] for p in k.pods(spd_selector)}.isdisjoint(
        p["metadata"]["name"] for p in k.pods(f"{c.LABEL_BENCHMARK}=sweep1")
    )
    status = k.wait_phase(c.BENCHMARK_KIND, "sweep1", "Running")
    assert cond(status, "BaselineReady")["status"] == "True"
    job = k.get("Job", "sweep1-benchmark")
    assert job is not None
    init = job["spec"]["template"]["spec"]["initContainers"]
    assert [x["name"] for x in init] == ["bench-speculator", "bench-baseline"]
    targets = [x["args"][x["args"].index("--target") + 1] for x in init]
    assert targets == [f"http://served.{k.ns}.svc:8000", f"http://sweep1-baseline.{k.ns}.svc:8000"]
    assert status["speculatorUrl"] == targets[0] and status["baselineUrl"] == targets[1]
    assert k.get("PersistentVolumeClaim", "sweep1-results") is not None

    # The spec of a run is immutable: the API server says so.
    with pytest.raises(ApiException) as info:
        k.patch(c.BENCHMARK_KIND, "sweep1", {"spec": {"maxSeconds": 60}})
    assert info.value.status == 422 and "spec is immutable" in json.loads(info.value.body)["message"]

    k.release_pods("job-name=sweep1-benchmark", message=json.dumps(SUMMARY, separators=(",", ":")))
    status = k.wait_phase(c.BENCHMARK_KIND, "sweep1", "Succeeded")
    assert (status["speedupAtLowestRate"], status["breakevenRate"], status["breakeven"]) == (
        1.87,
        7.2,
        "crossed",
    )
    assert [r["requestRate"] for r in status["rates"]] == [1.0, 8.0]
    assert (
        status["rates"][0]["baseline"]["itlP50Ms"] == 20.0
        and status["rates"][0]["speculator"]["itlP50Ms"] == 10.7
    )
    assert status["acceptance"] == {**SUMMARY["acceptance"], "source": "benchmark"}
    assert status["results"] == {
        "uri": "pvc://sweep1-results/sweep1",
        "report": "pvc://sweep1-results/sweep1/report.html",
    }
    assert cond(status, "Ready")["status"] == "True" and status.get("completionTime")
    # The baseline goes when the run ends; the results claim and the Job (until its TTL) stay.
    k.wait(
        lambda: (k.get("Deployment", "sweep1-baseline"), k.get("Service", "sweep1-baseline")),
        lambda objs: objs == (None, None),
        what="baseline deleted",
    )
    assert k.get("PersistentVolumeClaim", "sweep1-results") is not None
    # The served Speculator was never touched.
    assert k.get("Speculator", "served")["metadata"]["generation"] == 1

    kubectl = [find_binaries().path("kubectl"), "--kubeconfig", str(cluster.kubeconfig), "-n", k.ns]
    out = subprocess.run([*kubectl, "get", "spdb"], capture_output=True, text=True, check=True).stdout
    print(out)
    header, row = out.splitlines()[0].split(), out.splitlines()[1].split()
    assert header == ["NAME", "SPECULATOR", "PHASE", "SPEED-UP", "BREAKEVEN", "AGE"]
    assert row[:5] == ["sweep1", "served", "Succeeded", "1.87", "7.2"]
    reasons = [e["reason"] for e in k.events("sweep1")]
    assert "Succeeded" in reasons


def test_a_failed_run_says_why_and_drops_its_baseline(operator: OperatorProcess, k: Kube) -> None:
    k.create(speculator_body("served2", method="eagle3", numSpeculativeTokens=3))
    k.create(benchmark_body("broken", "served2"))
    k.wait_phase(c.BENCHMARK_KIND, "broken", "Running")
    assert k.get("Deployment", "broken-baseline") is not None
    message = "error: guidellm exited 1 without a report"
    k.release_pods("job-name=broken-benchmark", outcome="fail", exit_code=2, message=message)
    status = k.wait_phase(c.BENCHMARK_KIND, "broken", "Failed")
    ready = cond(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "BenchmarkFailed")
    assert "guidellm exited 1" in ready["message"]
    k.wait(lambda: k.get("Deployment", "broken-baseline"), lambda d: d is None, what="baseline deleted")
