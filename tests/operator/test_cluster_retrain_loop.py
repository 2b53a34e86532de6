"""The closed loop against the real control plane: healthy -> traffic drifts -> the operator retrains on the
captured traffic (a SpeculatorTraining <name>-r1 and its Job chain) -> canary Deployment next to the stable
one -> promoted when better, rolled back when not; an operator killed mid-canary resumes it without a
second canary; deleting the Speculator mid-loop removes everything.

kwok runs no containers, so the vLLM servers are stand-ins (hack/localrun/vllm_standin.Fleet): one per
Running pod on the pod's own IP, whose acceptance depends on the draft that pod's spec names and on the
"traffic" (the test changes the scenario's rates). The Job pods are held Running and released with the
summaries the real CLI steps would print.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from conftest import Kube, OperatorProcess
from localrun.vllm_standin import Scenario
from spd_testlib import EVAL, HOLD, PREPARE, TRAIN, cond, speculator_body
from standin_fleet import fleet

from kubecluster import find_binaries

pytestmark = pytest.mark.kwok

HEALTHY = [0.8, 0.75, 0.75]  # mean acceptance length 2.85 at k=3
DRIFTED = [0.6, 0.5, 0.5]  # 2.05: below 80 % of the baseline
BETTER = [0.9, 0.85, 0.8]  # 3.28: what a draft trained on the new traffic does on it
WORSE = [0.5, 0.4, 0.4]  # 1.78


def looped_speculator(name: str) -> dict[str, Any]:
    """Capture on, drift = 20 % below the baseline for 4 s, a 10 s canary; seconds instead of hours."""
    return speculator_body(
        name,
        method="eagle3",
        numSpeculativeTokens=3,
        metrics={"intervalSeconds": 2, "windowSeconds": 8},
        traffic={"capture": {"enabled": True, "sampleRate": 0.5, "pvc": {"size": "1Gi"}}},
        retrain={
            "when": {"dropFraction": 0.2, "forSeconds": 4, "minDrafts": 300},
            "cooldownSeconds": 60,
            "template": {
                "training": {"mode": "online"},
                "output": {"pvc": {"size": "1Gi"}},
                "podMetadata": {"annotations": dict(HOLD)},
            },
        },
        canary={"windowSeconds": 10, "minDrafts": 300, "timeoutSeconds": 120},
    )


def _eval(length_at_3: float) -> dict[str, Any]:
    return {**EVAL, "mean_accept_len": length_at_3, "accept_len_by_k": [1.8, 2.5, length_at_3, length_at_3]}


def drift_and_retrain(k: Kube, name: str, scenario: Scenario) -> dict[str, Any]:
    """Healthy until the baseline is taken, then the traffic drifts: the retrain training appears."""
    k.wait_phase("Speculator", name, "Running")
    status = k.wait_status(
        "Speculator", name, lambda s: (s.get("retrain") or {}).get("baseline"), "baseline", timeout=90
    )
    assert status["retrain"]["baseline"]["meanAcceptanceLength"] == pytest.approx(2.85, abs=0.01)
    assert cond(status, "Drifted")["reason"] == "Healthy"
    scenario.conditional = DRIFTED  # the traffic changed: the served draft now does worse
    training = k.wait(lambda: k.get("SpeculatorTraining", f"{name}-r1"), what="retrain", timeout=90)
    owner = training["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Speculator", name, True)
    assert training["spec"]["data"]["datasets"] == [{"uri": f"pvc://{name}-traffic/{name}"}]
    assert training["spec"]["data"]["regenerateEndpoint"] == f"http://{name}.{k.ns}.svc:8000/v1"
    # The operator creates the training, then writes status: wait for the write, do not race it.
    status = k.wait_status(
        "Speculator", name, lambda s: (s.get("retrain") or {}).get("active") == f"{name}-r1", "retrain active"
    )
    assert status["retrain"]["trigger"]["meanAcceptanceLength"] < status["retrain"]["threshold"]
    assert cond(status, "Retraining")["status"] == "True"
    return training


def finish_training(k: Kube, name: str, length_at_3: float) -> None:
    for step, summary in (("prepare", PREPARE), ("train", TRAIN), ("eval", _eval(length_at_3))):
        k.release_pods(f"job-name={name}-{step}", message=json.dumps(summary))
    k.wait_phase("SpeculatorTraining", name, "Succeeded")


def test_drift_retrains_and_a_better_canary_is_promoted_through_an_operator_restart(
    operator: OperatorProcess, k: Kube, cluster: Any
) -> None:
    scenario = Scenario(conditional=HEALTHY, by_draft={"chat-r1": BETTER})
    kubectl = [find_binaries().path("kubectl"), "--kubeconfig", str(cluster.kubeconfig), "-n", k.ns]
    # What a user watching sees (docs/operator.md shows this transcript).
    watch = subprocess.Popen([*kubectl, "get", "spd", "-w"], stdout=subprocess.PIPE, text=True)
    k.create(looped_speculator("chat"))
    with fleet(k, "chat", scenario):
        drift_and_retrain(k, "chat", scenario)
        # The prepare step reads the captured traffic and regenerates against the Speculator's own Service.
        prepare = k.wait(lambda: k.get("Job", "chat-r1-prepare"), what="prepare Job")
        args = prepare["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--data") + 1] == "/mnt/pvc/chat-traffic/chat"
        finish_training(k, "chat-r1", 3.1)
        training = k.get("SpeculatorTraining", "chat-r1")["status"]
        # Its gate compared it with the live (drifted) numbers of the draft it is to replace.
        assert training["promotion"]["promoted"] and training["promotion"]["serving"]["source"] == "live"

        status = k.wait_status(
            "Speculator",
            "chat",
            lambda s: (s.get("canary") or {}).get("phase") == "Running",
            "canary running",
        )
        canary = k.get("Deployment", "chat-vllm-canary")
        assert (
            canary["metadata"]["annotations"]["speculators.ai/draft"]
            == "pvc://chat-r1-workspace/chat-r1/model"
        )
        assert canary["spec"]["template"]["metadata"]["labels"]["speculators.ai/track"] == "canary"
        svc = k.get("Service", "chat")
        assert "app.kubernetes.io/instance" not in svc["spec"]["selector"]  # canary pods get traffic too

        # Killed mid-canary: the new process resumes the same canary from status.
        operator.kill()
        operator.start()
        status = k.wait_status(
            "Speculator", "chat", lambda s: (s.get("canary") or {}).get("phase") == "Promoted", "promoted",
            timeout=120,
        )  # fmt: skip
        assert status["canary"]["startTime"] == k.get("Speculator", "chat")["status"]["canary"]["startTime"]
        assert status["canary"]["decision"].startswith("Better: ")
        assert (
            status["canary"]["acceptance"]["meanAcceptanceLength"]
            > status["canary"]["stable"]["meanAcceptanceLength"]
        )
        assert cond(status, "CanaryPromoted")["status"] == "True"
        assert status["draft"]["uri"] == "pvc://chat-r1-workspace/chat-r1/model"
        assert status["draft"]["training"] == "chat-r1"
        assert status["previousDrafts"][0]["uri"] == "hf://RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3"
        stable = k.get("Deployment", "chat-vllm")
        assert stable["metadata"]["annotations"]["speculators.ai/draft"] == status["draft"]["uri"]
        assert stable["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        k.wait(lambda: k.get("Deployment", "chat-vllm-canary"), lambda d: d is None, what="canary removed")
        assert [d["metadata"]["name"] for d in k.list("Deployment")] == ["chat-vllm"]
        assert [t["metadata"]["name"] for t in k.list("SpeculatorTraining")] == ["chat-r1"]
        # The new draft's own live numbers are the next baseline, and it is healthy on the new traffic.
        status = k.wait_status(
            "Speculator", "chat", lambda s: cond(s, "Drifted")["reason"] == "Healthy", "healthy again"
        )
        assert status["retrain"]["baseline"]["uri"] == status["draft"]["uri"]
    reasons = [e["reason"] for e in k.events("chat")]
    for reason in ("Drifted", "RetrainStarted", "CanaryStarted", "CanaryPromoted"):
        assert reason in reasons
    assert reasons.count("CanaryStarted") == 1  # the restart started no second canary
    assert k.get("Speculator", "chat")["metadata"]["generation"] == 1  # spec was never written
    watch.terminate()
    seen = watch.communicate()[0]
    print(seen)
    header = seen.splitlines()[0].split()
    full = [line.split() for line in seen.splitlines()[1:] if len(line.split()) == len(header)]
    canary_column = [row[header.index("CANARY")] for row in full]
    assert "Running" in canary_column and canary_column[-1] == "Promoted"
    # From the canary on, every row has every column: the restart did not blank the acceptance columns.
    rows = [line.split() for line in seen.splitlines()[1:]]
    first = next(i for i, row in enumerate(rows) if "Starting" in row or "Running" in row[8:9])
    assert all(len(row) == len(header) for row in rows[first:]), seen


def test_a_worse_canary_is_rolled_back_and_the_stable_draft_stays(operator: OperatorProcess, k: Kube) -> None:
    scenario = Scenario(conditional=HEALTHY, by_draft={"roll-r1": WORSE})
    k.create(looped_speculator("roll"))
    with fleet(k, "roll", scenario):
        drift_and_retrain(k, "roll", scenario)
        stable_before = k.get("Deployment", "roll-vllm")
        finish_training(k, "roll-r1", 3.1)  # offline it looked better: only live traffic tells
        status = k.wait_status(
            "Speculator", "roll", lambda s: (s.get("canary") or {}).get("phase") == "RolledBack", "rolled",
            timeout=120,
        )  # fmt: skip
    rolled = cond(status, "CanaryPromoted")
    assert (rolled["status"], rolled["reason"]) == ("False", "RolledBack")
    assert rolled["message"].startswith("NotBetter: ") and "vs stable" in rolled["message"]
    assert status["draft"]["uri"] == "hf://RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3"
    assert status["retrain"]["lastResult"]["result"] == "RolledBack"
    k.wait(lambda: k.get("Deployment", "roll-vllm-canary"), lambda d: d is None, what="canary removed")
    stable = k.get("Deployment", "roll-vllm")
    assert stable["metadata"]["generation"] == stable_before["metadata"]["generation"]  # never rolled
    events = [e for e in k.events("roll") if e["reason"] == "CanaryRolledBack"]
    assert len(events) == 1 and events[0]["type"] == "Warning" and "vs stable" in events[0]["message"]


def test_deleting_the_speculator_mid_retrain_removes_everything(operator: OperatorProcess, k: Kube) -> None:
    scenario = Scenario(conditional=HEALTHY)
    k.create(looped_speculator("gone"))
    with fleet(k, "gone", scenario):
        drift_and_retrain(k, "gone", scenario)
        k.wait(lambda: k.get("Job", "gone-r1-prepare"), what="the retrain's first Job")
    k.delete("Speculator", "gone")
    k.wait(
        lambda: [
            f"{kind}/{o['metadata']['name']}"
            for kind in ("SpeculatorTraining", "Job", "Deployment", "Service", "PersistentVolumeClaim")
            for o in k.list(kind)
        ],
        lambda left: not left,
        what="everything garbage-collected",
        timeout=120,
    )
