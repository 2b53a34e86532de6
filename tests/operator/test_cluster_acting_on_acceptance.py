"""Acting on acceptance against the real control plane: automatic k converges to the best k and stays; the
promotion gate keeps a worse draft from the serving Speculator and lets a better one roll it.

kwok runs no containers, so the vLLM servers are stand-ins (hack/localrun/vllm_standin.Fleet): one per
Running pod, on the pod's own IP, drafting the k of that pod's own command line, with per-position
acceptance and step times from a scenario — so the best k is known in advance from the same model.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from conftest import Kube, OperatorProcess, free_port
from localrun.vllm_standin import Scenario
from spd_testlib import EVAL, PREPARE, TRAIN, cond, speculator_body, training_body
from standin_fleet import fleet

from kubecluster import find_binaries
from speculators_core.eval.cost import per_position_from_conditional
from speculators_operator.tuning.choose import Params, best_fixed_k
from speculators_operator.tuning.model import StepCost

pytestmark = pytest.mark.kwok


def tuned_speculator(name: str, start_k: int, tuning: dict[str, Any], port: int) -> dict[str, Any]:
    """A Speculator with automatic k, scraped every 2 s over an 8 s window (short cooldowns in tests)."""
    return speculator_body(
        name,
        method="eagle3",
        numSpeculativeTokens=start_k,
        tuning=tuning,
        vllm={"port": port},
        metrics={"intervalSeconds": 2, "windowSeconds": 8},
    )


def served_k(dep: dict[str, Any]) -> int:
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    return json.loads(args[args.index("--speculative-config") + 1])["num_speculative_tokens"]


def test_auto_k_converges_to_the_best_k_and_stays(operator: OperatorProcess, k: Kube) -> None:
    scenario = Scenario(conditional=[0.9, 0.85, 0.8, 0.6, 0.4, 0.3], step_seconds=0.02, cost_ratio=0.05)
    params = Params(k_min=1, k_max=6)
    best = best_fixed_k(
        per_position_from_conditional(scenario.conditional),
        StepCost(0.02, scenario.cost_ratio, "prior"),
        params,
    )
    assert best not in (2, 6)  # the scenario must make the tuner move, and not to a bound
    port = free_port()
    tuning = {"mode": "auto", "min": 1, "max": 6, "minGain": 2, "cooldownSeconds": 10, "minDrafts": 300}
    k.create(tuned_speculator("auto", 2, tuning, port))
    k.wait_phase("Speculator", "auto", "Running")
    assert served_k(k.get("Deployment", "auto-vllm")) == 2  # the start: spec's k
    with fleet(k, "auto", scenario, port) as stand_ins:
        status = k.wait_status(
            "Speculator",
            "auto",
            lambda s: (
                (s.get("draft") or {}).get("numSpeculativeTokens") == best
                and cond(s, "Tuned")["reason"] == "Stable"
            ),
            f"k tuned to {best} and stable",
            timeout=240,
        )
        changes = status["tuning"]["changes"]
        assert changes <= 2  # one exploration to the estimated best, at most one exact correction
        assert served_k(k.get("Deployment", "auto-vllm")) == best
        strategy = k.get("Deployment", "auto-vllm")["spec"]["strategy"]
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0  # a change never drops ready pods
        measured = {o["k"] for o in status["tuning"]["observations"]}
        assert {2, best} <= measured
        # It stays: three more cooldowns' worth of scrapes, no further change.
        seen = sum(s.scrapes for s, _ in stand_ins.servers.values())
        k.wait(
            lambda: sum(s.scrapes for s, _ in stand_ins.servers.values()),
            lambda n: n >= seen + 15,
            what="15 more scrapes",
            timeout=90,
        )
        status = k.get("Speculator", "auto")["status"]
        assert status["tuning"]["changes"] == changes and status["draft"]["numSpeculativeTokens"] == best
        events = [e for e in k.events("auto") if e["reason"] == "Tuned"]
        assert len(events) == changes and "→" in events[0]["message"]
    # spec is never written: the generation the user made is the only one.
    assert k.get("Speculator", "auto")["metadata"]["generation"] == 1


def test_load_buckets_turn_speculation_off_where_it_does_not_pay(operator: OperatorProcess, k: Kube) -> None:
    """At a running batch of 8 every drafted token costs as much as the verifier's own step: the tuner
    measures that (two k in that bucket) and serves k=0 there through vLLM's batch-size schedule, while
    the low-load bucket, without traffic, keeps its start k."""
    scenario = Scenario(
        conditional=[0.8, 0.7, 0.6, 0.5], running=8, high_load=5, high_load_cost_ratio=1.0, cost_ratio=0.05
    )
    port = free_port()
    tuning = {
        "mode": "auto",
        "min": 1,
        "max": 4,
        "minGain": 2,
        "cooldownSeconds": 10,
        "minDrafts": 300,
        "loadBuckets": [4],
    }
    k.create(tuned_speculator("buckets", 3, tuning, port))
    k.wait_phase("Speculator", "buckets", "Running")
    with fleet(k, "buckets", scenario, port):
        status = k.wait_status(
            "Speculator",
            "buckets",
            lambda s: (
                [b["numSpeculativeTokens"] for b in (s.get("tuning") or {}).get("schedule", [])] == [3, 0]
            ),
            "k 0 at high load",
            timeout=240,
        )
    assert status["tuning"]["schedule"][1]["minBatchSize"] == 5
    assert status["draft"]["numSpeculativeTokens"] == 3  # the top-level k: the largest of the schedule
    args = k.get("Deployment", "buckets-vllm")["spec"]["template"]["spec"]["containers"][0]["args"]
    config = json.loads(args[args.index("--speculative-config") + 1])
    assert config["num_speculative_tokens"] == 3
    assert config["num_speculative_tokens_per_batch_size"] == [[1, 4, 3], [5, 65536, 0]]
    high = [o for o in status["tuning"]["observations"] if o["bucket"] == 1]
    assert len({o["k"] for o in high}) >= 2  # the cost was measured, not assumed


def _train(k: Kube, name: str, eval_summary: dict[str, Any]) -> None:
    """A training deploying to Speculator `served`; its held Job pods released with these summaries."""
    k.create(
        training_body(
            name,
            training={"mode": "online"},
            deploy={"name": "served", "metrics": {"intervalSeconds": 2, "windowSeconds": 30}},
        )
    )
    for step, summary in (("prepare", PREPARE), ("train", TRAIN), ("eval", eval_summary)):
        k.release_pods(f"job-name={name}-{step}", message=json.dumps(summary))
    k.wait_phase("SpeculatorTraining", name, "Succeeded")


def _eval(length_at_3: float) -> dict[str, Any]:
    return {
        **EVAL,
        "mean_accept_len": length_at_3,
        "accept_len_by_k": [1.7, 2.2, length_at_3, length_at_3 + 0.1],
    }


def test_gate_keeps_a_worse_draft_out_and_a_better_one_rolls_the_speculator(
    operator: OperatorProcess, k: Kube, cluster: Any
) -> None:
    _train(k, "first", _eval(2.4))
    status = k.wait_status(
        "SpeculatorTraining", "first", lambda s: cond(s, "Deployed")["status"] == "True", "deployed"
    )
    assert cond(status, "Promoted")["status"] == "True"
    spd = k.get("Speculator", "served")
    assert spd["spec"]["draft"] == {"trainingRef": {"name": "first"}}

    # Live traffic on the served draft: acceptance length 1 + 0.8 + 0.6 + 0.45 = 2.85 at k=3.
    port = 8000
    scenario = Scenario(conditional=[0.8, 0.75, 0.75])
    with fleet(k, "served", scenario, port):
        k.wait_status(
            "Speculator",
            "served",
            lambda s: (s.get("acceptance") or {}).get("drafts", 0) >= 200,
            "a live window of 200 drafts",
        )
        live = k.get("Speculator", "served")["status"]["acceptance"]["meanAcceptanceLength"]
        assert live == pytest.approx(2.85, abs=0.01)
        dep_before = k.get("Deployment", "served-vllm")

        # Offline 2.6 does not beat live 2.85: promoted false, the Speculator untouched.
        _train(k, "second", _eval(2.6))
        status = k.wait_status(
            "SpeculatorTraining",
            "second",
            lambda s: "Promoted" in [c["type"] for c in s["conditions"]],
            "gate",
        )
        promoted = cond(status, "Promoted")
        assert (promoted["status"], promoted["reason"]) == ("False", "NotBetterThanServing")
        assert "2.600 at k=3 vs the serving draft's live 2.85" in promoted["message"]
        assert status["promotion"]["serving"]["source"] == "live"
        assert (cond(status, "Ready")["status"], cond(status, "Deployed")["reason"]) == (
            "True",
            "NotPromoted",
        )
        assert k.get("Speculator", "served")["spec"]["draft"] == {"trainingRef": {"name": "first"}}
        dep = k.get("Deployment", "served-vllm")
        assert dep["metadata"]["generation"] == dep_before["metadata"]["generation"]

        # Offline 3.1 beats it: the Speculator now serves `third`, through a rolling update.
        _train(k, "third", _eval(3.1))
        k.wait(
            lambda: k.get("Speculator", "served"),
            lambda s: s["spec"]["draft"] == {"trainingRef": {"name": "third"}},
            what="served by third",
        )
        dep = k.wait(
            lambda: k.get("Deployment", "served-vllm"),
            lambda d: "third" in json.dumps(d["spec"]["template"]["spec"]["containers"][0]["args"]),
            what="the Deployment rolled to third's draft",
        )
        assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
        owners = [
            (o["name"], o.get("controller"))
            for o in k.get("Speculator", "served")["metadata"]["ownerReferences"]
        ]
        assert owners == [("third", True)]
        first = k.wait_status(
            "SpeculatorTraining",
            "first",
            lambda s: cond(s, "Deployed")["reason"] == "Superseded",
            "superseded",
        )
        assert cond(first, "Ready")["status"] == "True" and "third" in cond(first, "Deployed")["message"]
        # And the first training does not take it back.
        k.wait_status("Speculator", "served", lambda s: s.get("phase") == "Running", "running third's draft")
        assert k.get("Speculator", "served")["spec"]["draft"] == {"trainingRef": {"name": "third"}}
    # What a user sees: the Promoted column (third's Ready follows its Speculator's a moment later).
    k.wait_status(
        "SpeculatorTraining", "third", lambda s: cond(s, "Ready")["status"] == "True", "third Ready"
    )
    kubectl = [find_binaries().path("kubectl"), "--kubeconfig", str(cluster.kubeconfig), "-n", k.ns]
    out = subprocess.run([*kubectl, "get", "spdt"], capture_output=True, text=True, check=True).stdout
    print(out)
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert [rows[n][4] for n in ("first", "second", "third")] == ["True", "False", "True"]
    assert all(rows[n][5] == "True" for n in rows)  # Ready: a gated-out training did its job
