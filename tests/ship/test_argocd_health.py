"""Argo CD health checks (argocd/resource_customizations/<group>/<Kind>/health.lua) on a real Lua
5.1 interpreter, with Argo CD's own test layout: health_test.yaml lists testdata/*.yaml and the expected
{status, message}."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from argocd_lua import lua_version, run_health, run_health_file

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / "argocd" / "resource_customizations"
CUSTOMIZATIONS = ROOT / "speculators.ai"
KINDS = ("Speculator", "SpeculatorTraining", "SpeculatorBenchmark")
GROUPS = {
    "Speculator": "speculators.ai",
    "SpeculatorTraining": "speculators.ai",
    "SpeculatorBenchmark": "speculators.ai",
    "TrainJob": "trainer.kubeflow.org",
}
ALL_KINDS = tuple(GROUPS)


def _dir(kind: str) -> Path:
    return ROOT / GROUPS[kind] / kind


def _cases() -> list[Any]:
    cases = []
    for kind in ALL_KINDS:
        spec = yaml.safe_load((_dir(kind) / "health_test.yaml").read_text())
        for case in spec["tests"]:
            cases.append(pytest.param(kind, case, id=f"{kind}-{Path(case['inputPath']).stem}"))
    return cases


def test_interpreter_is_lua_5_1_like_argo_cd() -> None:
    assert lua_version() == "Lua 5.1"


def test_sandbox_has_no_string_library_as_in_argocd_cm() -> None:
    """Scripts from argocd-cm run without the string library: a script using it must fail here too."""
    with pytest.raises(Exception, match="string"):
        run_health('return {status = string.upper("healthy"), message = ""}', {})
    with pytest.raises(Exception, match="attempt to index"):
        run_health('local s = "x"; return {status = s:upper(), message = ""}', {})


@pytest.mark.parametrize(("kind", "case"), _cases())
def test_health_of_testdata(kind: str, case: dict[str, Any]) -> None:
    obj = yaml.safe_load((_dir(kind) / case["inputPath"]).read_text())
    assert obj["kind"] == kind
    health = run_health_file(_dir(kind) / "health.lua", obj)
    assert (health.status, health.message) == (
        case["healthStatus"]["status"],
        case["healthStatus"]["message"],
    )


def test_every_testdata_file_is_covered() -> None:
    for kind in ALL_KINDS:
        listed = {
            Path(c["inputPath"]).name
            for c in yaml.safe_load((_dir(kind) / "health_test.yaml").read_text())["tests"]
        }
        present = {p.name for p in (_dir(kind) / "testdata").glob("*.yaml")}
        assert listed == present, kind


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_health_status_of_the_contract_is_exercised(kind: str) -> None:
    statuses = {
        c["healthStatus"]["status"]
        for c in yaml.safe_load((_dir(kind) / "health_test.yaml").read_text())["tests"]
    }
    suspends = kind in ("Speculator", "TrainJob")
    expected = {"Healthy", "Progressing", "Degraded"} | ({"Suspended"} if suspends else set())
    assert statuses == expected


# -- the scripts against what the operator itself writes --------------------------------------------------

NOW = "2026-01-01T00:00:00Z"


def _with_status(body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {**body, "status": status}


def _health(kind: str, obj: dict[str, Any]) -> str:
    return run_health_file(CUSTOMIZATIONS / kind / "health.lua", obj).status


def test_health_of_the_status_the_operator_derives() -> None:
    """The status the operator's own pure derive functions produce maps to the intended health: the Lua
    and the operator's status contract cannot drift apart unnoticed."""
    from shiplib import speculator_body, training_body

    from speculators_operator.render.training import TrainingContext, step_hashes, step_job
    from speculators_operator.status.speculator import SpeculatorObserved, derive_speculator
    from speculators_operator.status.training import TrainingObserved, derive_training

    body = speculator_body()
    plan = derive_speculator(body, SpeculatorObserved(), now=NOW)
    assert _health("Speculator", _with_status(body, plan.status)) == "Progressing"  # creating the Deployment

    def deployment(replicas: int, ready: int) -> dict[str, Any]:
        return {
            "kind": "Deployment",
            "metadata": {
                "name": "granite-vllm",
                "namespace": "ns",
                "generation": 1,
                "annotations": {"speculators.ai/draft": body["spec"]["draft"]["uri"]},  # what it serves
            },
            "status": {
                "observedGeneration": 1,
                "replicas": replicas,
                "readyReplicas": ready,
                "updatedReplicas": replicas,
            },
        }

    observed = SpeculatorObserved(deployment=deployment(1, 1), service={"kind": "Service"})
    assert (
        _health("Speculator", _with_status(body, derive_speculator(body, observed, now=NOW).status))
        == "Healthy"
    )
    # Stale: the user changed the spec; the operator has not caught up.
    stale = _with_status(
        {**body, "metadata": {**body["metadata"], "generation": 2}},
        derive_speculator(body, observed, now=NOW).status,
    )
    assert _health("Speculator", stale) == "Progressing"
    crash = {
        "metadata": {"name": "granite-vllm-x"},
        "status": {
            "containerStatuses": [{"name": "vllm", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]
        },
    }
    observed.pods = [crash]
    assert (
        _health("Speculator", _with_status(body, derive_speculator(body, observed, now=NOW).status))
        == "Degraded"
    )
    zero = speculator_body(replicas=0)
    observed = SpeculatorObserved(deployment=deployment(0, 0), service={"kind": "Service"})
    assert (
        _health("Speculator", _with_status(zero, derive_speculator(zero, observed, now=NOW).status))
        == "Suspended"
    )
    kserve = speculator_body(backend="kserve")
    plan = derive_speculator(kserve, SpeculatorObserved(kserve_served=False), now=NOW)
    assert _health("Speculator", _with_status(kserve, plan.status)) == "Degraded"

    training = training_body()
    plan = derive_training(training, TrainingObserved(), now=NOW)
    assert _health("SpeculatorTraining", _with_status(training, plan.status)) == "Progressing"
    ctx = TrainingContext.of(training)
    job = step_job(ctx, "prepare", step_hashes(ctx)["prepare"])
    job["metadata"]["uid"] = "uid-job"
    job["status"] = {
        "failed": 1,
        "conditions": [
            {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "exit 2"}
        ],
    }
    failed_pod = {
        "metadata": {"name": "llama-prepare-x", "creationTimestamp": NOW, "labels": {}},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "prepare",
                    "state": {"terminated": {"exitCode": 2, "message": '{"error": "bad data"}'}},
                }
            ],
        },
    }
    observed_training = TrainingObserved(jobs={"prepare": job}, pods={"llama-prepare": [failed_pod]})
    plan = derive_training(training, observed_training, now=NOW)
    assert plan.status["phase"] == "Failed"
    assert _health("SpeculatorTraining", _with_status(training, plan.status)) == "Degraded"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_testdata_are_valid_objects_of_the_crds(
    kind: str, kube_api: Any, install_crds: Any, third_party_crds: list[str], namespace: str
) -> None:
    """Each testdata object is one the API server would store (ours, or Trainer v2.3.0's CRD): created, then
    its status written through the status subresource, nothing is pruned (a renamed field would be)."""
    from release.paths import CRDS

    install_crds(*sorted(CRDS.glob("speculators.ai_*.yaml")))
    plural = {
        "Speculator": "speculators",
        "SpeculatorTraining": "speculatortrainings",
        "SpeculatorBenchmark": "speculatorbenchmarks",
        "TrainJob": "trainjobs",
    }[kind]
    for i, path in enumerate(sorted((_dir(kind) / "testdata").glob("*.yaml"))):
        obj = yaml.safe_load(path.read_text())
        name = f"health-{i}"
        created = kube_api.create(
            {
                "apiVersion": obj["apiVersion"],
                "kind": kind,
                "metadata": {"name": name, "annotations": obj["metadata"].get("annotations") or {}},
                "spec": obj["spec"],
            },
            namespace,
        )
        if "status" not in obj:
            continue
        stored = kube_api.request(
            "PATCH",
            f"/apis/{obj['apiVersion']}/namespaces/{namespace}/{plural}/{name}/status",
            body={"status": obj["status"]},
            content_type="application/merge-patch+json",
        )
        assert created["metadata"]["name"] == name
        assert stored["status"] == json.loads(json.dumps(obj["status"])), path.name


def test_health_of_the_benchmark_status_the_operator_derives() -> None:
    from speculators_core.bench.speedup import COLUMNS
    from speculators_operator.render.common import Images
    from speculators_operator.status.benchmark import BenchmarkObserved, derive_benchmark

    body = {
        "apiVersion": "speculators.ai/v1alpha1",
        "kind": "SpeculatorBenchmark",
        "metadata": {"name": "b", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"speculatorRef": {"name": "llama"}},
    }
    waiting = derive_benchmark(body, BenchmarkObserved(), Images()).status
    assert _health("SpeculatorBenchmark", _with_status(body, waiting)) == "Progressing"
    job = {
        "metadata": {"name": "b-benchmark"},
        "status": {"conditions": [{"type": "Complete", "status": "True"}]},
    }
    message = json.dumps({"columns": list(COLUMNS), "rates": [], "breakeven": "no-overlap"})
    pod = {
        "metadata": {"name": "p", "labels": {"batch.kubernetes.io/job-name": "b-benchmark"}},
        "status": {
            "containerStatuses": [
                {"name": "report", "state": {"terminated": {"exitCode": 0, "message": message}}}
            ]
        },
    }
    done = derive_benchmark(body, BenchmarkObserved(job=job, pods=[pod]), Images()).status
    assert done["phase"] == "Succeeded"
    assert _health("SpeculatorBenchmark", _with_status(body, done)) == "Healthy"
    job["status"]["conditions"] = [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]
    failed = derive_benchmark(body, BenchmarkObserved(job=job), Images()).status
    assert _health("SpeculatorBenchmark", _with_status(body, failed)) == "Degraded"
