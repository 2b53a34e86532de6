"""The operator process itself: SIGKILLed mid-flight and restarted (no duplicate children, no lost status),
and the README's flow: `kubectl apply -f examples/` then `kubectl get speculatortrainings,speculators`."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import Kube, OperatorProcess, VllmStandIn, free_port
from spd_testlib import EVAL, FIXTURE_METRICS, PREPARE, REPO, TRAIN, cond, speculator_body, training_body

from kubecluster import find_binaries

pytestmark = pytest.mark.kwok


def _job_names(k: Kube) -> list[str]:
    return sorted(j["metadata"]["name"] for j in k.list("Job"))


def _complete(job: dict | None) -> bool:
    return bool(job) and any(
        c["type"] == "Complete" and c["status"] == "True" for c in job.get("status", {}).get("conditions", [])
    )


def test_operator_killed_mid_flight_resumes_without_duplicates(operator: OperatorProcess, k: Kube) -> None:
    port = free_port()
    k.create(training_body("crash", training={"mode": "online"}))
    k.create(
        speculator_body(
            "crash-spd",
            method="eagle3",
            numSpeculativeTokens=3,
            vllm={"port": port},
            metrics={"intervalSeconds": 2},
        )
    )
    prepare = k.wait(lambda: k.get("Job", "crash-prepare"), what="prepare Job")
    before = k.wait_phase("SpeculatorTraining", "crash", "PreparingData")
    pod = k.wait(
        lambda: [p for p in k.pods("speculators.ai/speculator=crash-spd") if p["status"].get("podIP")],
        what="vLLM pod",
    )[0]
    with VllmStandIn(pod["status"]["podIP"], port, FIXTURE_METRICS.read_text()).running():
        acc = k.wait_status(
            "Speculator", "crash-spd", lambda s: (s.get("acceptance") or {}).get("drafts"), "acceptance"
        )["acceptance"]
        dep_uid = k.get("Deployment", "crash-spd-vllm")["metadata"]["uid"]

        operator.kill()
        # While the operator is gone the cluster moves on: the prepare pod finishes, its Job completes.
        k.release_pods("job-name=crash-prepare", message=json.dumps(PREPARE))
        k.wait(lambda: k.get("Job", "crash-prepare"), _complete, what="prepare Job complete")
        assert _job_names(k) == ["crash-prepare"]  # nobody to act on it

        operator.start()
        k.wait(lambda: k.get("Job", "crash-train"), what="train Job after the restart")
        after = k.wait_status(
            "SpeculatorTraining",
            "crash",
            lambda s: [st["state"] for st in s.get("steps", [])] == ["Succeeded", "Running"],
            "train running",
        )
        assert after["phase"] == "Training"
        assert after["startTime"] == before["startTime"]
        assert k.get("Job", "crash-prepare")["metadata"]["uid"] == prepare["metadata"]["uid"]
        assert _job_names(k) == ["crash-prepare", "crash-train"]

        # The Speculator kept its status (the new process has an empty window) and its Deployment.
        spd = k.get("Speculator", "crash-spd")
        assert spd["status"]["acceptance"]["drafts"] == acc["drafts"]
        assert spd["status"]["acceptance"]["acceptanceRate"] == acc["acceptanceRate"]
        assert [d["metadata"]["uid"] for d in k.list("Deployment")] == [dep_uid]

    # Killed again right after starting: still exactly one Job per step.
    operator.kill()
    operator.start()
    k.release_pods("job-name=crash-train", message=json.dumps(TRAIN))
    k.release_pods("job-name=crash-eval", message=json.dumps(EVAL))
    status = k.wait_phase("SpeculatorTraining", "crash", "Succeeded")
    assert _job_names(k) == ["crash-eval", "crash-prepare", "crash-train"]
    assert cond(status, "Ready")["status"] == "True"
    # No finalizer was ever added: deletion never waits for the operator.
    operator.kill()
    k.delete("SpeculatorTraining", "crash")
    k.delete("Speculator", "crash-spd")
    k.wait(
        lambda: k.list("SpeculatorTraining") + k.list("Speculator"),
        lambda objs: not objs,
        what="deleted without the operator",
    )


def test_examples_apply_and_show_in_kubectl_get(operator: OperatorProcess, k: Kube, cluster) -> None:
    kubectl = [find_binaries().path("kubectl"), "--kubeconfig", str(cluster.kubeconfig), "-n", k.ns]
    applied = subprocess.run(
        [*kubectl, "apply", "-f", str(REPO / "examples")], capture_output=True, text=True
    )
    assert applied.returncode == 0, applied.stderr
    assert "speculatortraining.speculators.ai/llama3-8b-eagle3 created" in applied.stdout

    # Without sim markers kwok finishes every Job pod at once, so the pipeline runs straight through.
    k.wait_phase("SpeculatorTraining", "llama3-8b-eagle3", "Succeeded", timeout=90)
    for name in ("llama3-8b-eagle3-k4", "llama3-8b-redhat-eagle3"):
        k.wait_phase("Speculator", name, "Running", timeout=90)
    # kwok's eval pods report no numbers, so the promotion gate keeps spec.deploy back: the training is
    # still Ready (it did its job) and says why; a trainingRef Speculator (the user's own choice) serves.
    status = k.wait_status(
        "SpeculatorTraining",
        "llama3-8b-eagle3",
        lambda s: any(c["type"] == "Promoted" and c["status"] == "False" for c in s.get("conditions", [])),
        "the gate decided",
        timeout=90,
    )
    assert [(c["status"], c["reason"]) for c in status["conditions"] if c["type"] == "Promoted"] == [
        ("False", "NoEvaluation")
    ]
    assert [c["status"] for c in status["conditions"] if c["type"] == "Ready"] == ["True"]
    assert k.get("Speculator", "llama3-8b-eagle3") is None
    out = subprocess.run([*kubectl, "get", "speculatortrainings,speculators"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    print(out.stdout)
    assert lines[0].split() == [
        "NAME",
        "PHASE",
        "PROGRESS",
        "ACCEPT-LEN",
        "PROMOTED",
        "READY",
        "REASON",
        "AGE",
    ]
    training_row = lines[1].split()  # empty cells (no evaluation summary on kwok) vanish in split()
    assert training_row[0] == "speculatortraining.speculators.ai/llama3-8b-eagle3"
    assert training_row[1:3] == ["Succeeded", "100"] and training_row[-4:-1] == ["False", "True", "Succeeded"]
    # `speculators` is also the kinds' category: kubectl lists every kind of it, one table each.
    headers = [line.split() for line in lines if line.startswith("NAME")]
    assert ["NAME", "SPECULATOR", "PHASE", "SPEED-UP", "BREAKEVEN", "AGE"] in headers
    header = next(line for line in lines[2:] if line.startswith("NAME") and "REPLICAS" in line)
    assert header.split() == [
        "NAME",
        "PHASE",
        "READY",
        "REPLICAS",
        "METHOD",
        "K",
        "ACCEPT-RATE",
        "ACCEPT-LEN",
        "CANARY",
        "URL",
        "AGE",
    ]
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("speculator.speculators.ai/")}
    assert rows["speculator.speculators.ai/llama3-8b-eagle3-k4"][1:6] == [
        "Running",
        "True",
        "1",
        "eagle3",
        "4",
    ]
    assert rows["speculator.speculators.ai/llama3-8b-redhat-eagle3"][1:6] == [
        "Running",
        "True",
        "1",
        "eagle3",
        "3",
    ]
