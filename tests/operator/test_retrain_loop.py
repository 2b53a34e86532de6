"""The closed loop as pure functions: drift -> retrain training -> canary -> promoted or rolled back, from
observed state only (the cluster scenarios are in test_cluster_retrain_loop.py)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from spd_testlib import speculator

from speculators_core.vllm_metrics.acceptance import Counters, summarize
from speculators_operator.api.common import ModelSource
from speculators_operator.metrics.store import AcceptanceState
from speculators_operator.metrics.window import AcceptanceWindow
from speculators_operator.render.retrain import retrain_name
from speculators_operator.render.speculator import ResolvedDraft, SpeculatorContext
from speculators_operator.status.conditions import find
from speculators_operator.status.retrain import LoopObserved, run_loop
from speculators_operator.status.speculator import SpeculatorObserved, derive_speculator

DRAFT = "hf://RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3"
T0 = "2026-01-01T00:00:00Z"


def at(seconds: int) -> str:
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"2026-01-01T{h:02d}:{m:02d}:{s:02d}Z"


def body(**spec: Any) -> dict[str, Any]:
    base = {
        "method": "eagle3",
        "numSpeculativeTokens": 3,
        "replicas": 2,
        "traffic": {"capture": {"enabled": True}},
        "retrain": {
            "when": {"dropFraction": 0.2, "forSeconds": 60, "minDrafts": 100},
            "cooldownSeconds": 600,
        },
        "canary": {"windowSeconds": 60, "minDrafts": 100, "timeoutSeconds": 600},
        "metrics": {"windowSeconds": 30, "intervalSeconds": 5},
    }
    base.update(spec)
    return speculator("chat", **base)


def window(per_position: list[float], drafts: int = 1000) -> dict[str, Any]:
    counters = Counters(
        drafts=drafts,
        draft_tokens=drafts * len(per_position),
        accepted=sum(round(p * drafts) for p in per_position),
        per_pos={i: float(round(p * drafts)) for i, p in enumerate(per_position)},
    )
    return summarize(counters, window_seconds=30, pods=2, source="pods")


def base_draft() -> ResolvedDraft:
    return ResolvedDraft(ModelSource(uri=DRAFT), "eagle3", 3)


class Loop:
    """Run the loop pass after pass, carrying status forward like the reconciler does."""

    def __init__(self, obj: dict[str, Any], base: ResolvedDraft | None = None) -> None:
        self.body = obj
        self.status: dict[str, Any] = {}
        self.ctx = SpeculatorContext.of(obj)
        self.base = base or base_draft()

    def step(self, now: str, **observed: Any) -> Any:
        observed.setdefault("stable_uri", (self.status.get("draft") or {}).get("uri", DRAFT))
        observed.setdefault("stable_ready", True)
        out = run_loop(self.ctx, self.base, self.status, LoopObserved(**observed), now)
        self.status = {
            "retrain": out.retrain,
            "canary": out.canary_status,
            "previousDrafts": out.previous_drafts,
            "draft": {"uri": out.stable.source.uri, "method": out.stable.method, "numSpeculativeTokens": 3},
        }
        self.status = {k: copy.deepcopy(v) for k, v in self.status.items() if v}
        return out


def cond(out: Any, type_: str) -> dict[str, Any]:
    found = [c for c in out.conditions if c.type == type_]
    assert found, f"no {type_} in {[c.type for c in out.conditions]}"
    return {"status": found[0].status, "reason": found[0].reason, "message": found[0].message}


HEALTHY = [0.8, 0.6, 0.45]  # length 2.85
DRIFTED = [0.6, 0.35, 0.2]  # length 2.15 (-25 %)


def drift_to_retrain(loop: Loop) -> Any:
    """Healthy long enough for a baseline, then below the bar for forSeconds: the retrain starts."""
    out = loop.step(at(0), stable_acceptance=window(HEALTHY))
    assert cond(out, "Drifted")["reason"] == "Settling"  # the window is not a whole draft's window yet
    assert "baseline" not in loop.status["retrain"]
    out = loop.step(at(40), stable_acceptance=window(HEALTHY))
    assert loop.status["retrain"]["baseline"]["meanAcceptanceLength"] == pytest.approx(2.85)
    assert cond(out, "Drifted") == {
        "status": "False",
        "reason": "Healthy",
        "message": "mean acceptance length 2.850 at k=3, bar 2.280",
    }
    out = loop.step(at(100), stable_acceptance=window(DRIFTED))
    assert cond(out, "Drifted")["reason"] == "BelowThreshold" and not out.create
    out = loop.step(at(159), stable_acceptance=window(DRIFTED))
    assert not out.create  # 59 s below: forSeconds is 60
    out = loop.step(at(160), stable_acceptance=window(DRIFTED))
    assert [t["metadata"]["name"] for t in out.create] == ["chat-r1"]
    return out


def test_drift_for_for_seconds_starts_one_retrain_on_the_captured_traffic() -> None:
    loop = Loop(body())
    out = drift_to_retrain(loop)
    training = out.create[0]
    assert training["metadata"]["ownerReferences"][0]["kind"] == "Speculator"
    assert training["metadata"]["labels"]["speculators.ai/speculator"] == "chat"
    assert training["spec"]["verifier"] == {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"}
    assert training["spec"]["data"] == {
        "datasets": [{"uri": "pvc://chat-traffic/chat"}],
        "regenerateResponses": True,
        "regenerateEndpoint": "http://chat.ns.svc:8000/v1",
    }
    r = loop.status["retrain"]
    assert r["active"] == "chat-r1" and r["count"] == 1 and r["threshold"] == pytest.approx(2.28)
    assert r["trigger"]["meanAcceptanceLength"] == pytest.approx(2.15)
    assert [e.reason for e in out.events] == ["Drifted", "RetrainStarted"]
    # While it trains, nothing else starts, whatever the window says.
    running = {"chat-r1": {"status": {"phase": "Training"}}}
    out = loop.step(at(900), stable_acceptance=window(DRIFTED), trainings=running)
    assert not out.create and cond(out, "Retraining")["reason"] == "Training"


def test_an_absolute_bar_needs_no_baseline_and_a_quiet_window_is_not_judged() -> None:
    loop = Loop(body(retrain={"when": {"meanAcceptanceLengthBelow": 2.5, "forSeconds": 0, "minDrafts": 100}}))
    out = loop.step(at(0), stable_acceptance=window(DRIFTED, drafts=50))
    assert cond(out, "Drifted")["reason"] == "NotEnoughDrafts" and not out.create
    out = loop.step(at(10), stable_acceptance=window(DRIFTED), stable_ready=False)  # rolling: not judged
    assert not out.create
    out = loop.step(at(20), stable_acceptance=window(DRIFTED))
    assert cond(out, "Drifted")["reason"] == "Settling" and not out.create  # 20 s < the 30 s window
    out = loop.step(at(30), stable_acceptance=window(DRIFTED))
    assert [t["metadata"]["name"] for t in out.create] == ["chat-r1"]


def test_a_failed_retrain_backs_off_doubling_the_cooldown() -> None:
    loop = Loop(body())
    drift_to_retrain(loop)
    failed = {"chat-r1": {"status": {"phase": "Failed", "conditions": [{"type": "Ready", "message": "OOM"}]}}}
    out = loop.step(at(200), stable_acceptance=window(DRIFTED), trainings=failed)
    assert loop.status["retrain"]["lastResult"]["result"] == "TrainingFailed"
    assert loop.status["retrain"]["consecutiveFailures"] == 1
    assert [e.reason for e in out.events] == ["RetrainTrainingFailed"]
    # cooldown 600 s x 2 after one failure, from the trigger at 160 s.
    out = loop.step(at(160 + 1199), stable_acceptance=window(DRIFTED))
    assert not out.create and cond(out, "Drifted")["reason"] == "CoolingDown"
    out = loop.step(at(160 + 1200), stable_acceptance=window(DRIFTED))
    assert [t["metadata"]["name"] for t in out.create] == ["chat-r2"]


def succeeded(promoted: bool, uri: str = "pvc://chat-r1-workspace/chat-r1/model") -> dict[str, Any]:
    return {
        "status": {
            "phase": "Succeeded",
            "output": {"uri": uri, "method": "eagle3", "numSpeculativeTokens": 3},
            "promotion": {
                "promoted": promoted,
                "reason": "Passed" if promoted else "NotBetterThanServing",
                "message": "3.000 at k=3 vs the serving draft's live 2.15",
            },
        }
    }


def canary_deployment(uri: str, ready: int = 1) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "chat-vllm-canary",
            "generation": 1,
            "annotations": {"speculators.ai/draft": uri},
        },
        "status": {
            "observedGeneration": 1,
            "readyReplicas": ready,
            "updatedReplicas": ready,
            "replicas": ready,
        },
    }


NEW = "pvc://chat-r1-workspace/chat-r1/model"


def to_canary_running(loop: Loop) -> None:
    drift_to_retrain(loop)
    out = loop.step(at(200), stable_acceptance=window(DRIFTED), trainings={"chat-r1": succeeded(True)})
    assert loop.status["canary"]["phase"] == "Starting" and out.canary is not None
    assert out.canary.source.uri == NEW and [e.reason for e in out.events] == ["CanaryStarted"]
    out = loop.step(at(210), stable_acceptance=window(DRIFTED), canary=canary_deployment(NEW, ready=0))
    assert loop.status["canary"]["phase"] == "Starting"
    out = loop.step(at(220), stable_acceptance=window(DRIFTED), canary=canary_deployment(NEW))
    assert loop.status["canary"]["phase"] == "Running" and loop.status["canary"]["startTime"] == at(220)


def test_a_better_canary_is_promoted_and_the_stable_pods_roll_to_it() -> None:
    loop = Loop(body())
    to_canary_running(loop)
    better = window([0.85, 0.65, 0.5])  # 3.0
    # Before windowSeconds: no decision, whatever the numbers.
    out = loop.step(
        at(279), stable_acceptance=window(DRIFTED), canary_acceptance=better, canary=canary_deployment(NEW)
    )
    assert loop.status["canary"]["phase"] == "Running" and out.stable.source.uri == DRAFT
    out = loop.step(
        at(280), stable_acceptance=window(DRIFTED), canary_acceptance=better, canary=canary_deployment(NEW)
    )
    assert loop.status["canary"]["phase"] == "Promoting"
    assert out.stable.source.uri == NEW  # the stable Deployment renders the new draft now
    assert out.canary is not None  # and the canary stays until the stable pods have rolled
    assert "3.000 vs stable 2.150" in loop.status["canary"]["decision"]
    assert loop.status["previousDrafts"][0]["uri"] == DRAFT
    assert loop.status["retrain"]["promoted"]["training"] == "chat-r1"
    assert [e.reason for e in out.events] == ["CanaryPromoted"]
    # The stable Deployment still shows the old draft: the canary stays.
    out = loop.step(
        at(290), stable_acceptance=window(DRIFTED), stable_uri=DRAFT, canary=canary_deployment(NEW)
    )
    assert loop.status["canary"]["phase"] == "Promoting" and not out.delete
    out = loop.step(at(300), stable_acceptance=better, stable_uri=NEW, canary=canary_deployment(NEW))
    assert (
        loop.status["canary"]["phase"] == "Promoted"
        and out.delete[0]["metadata"]["name"] == "chat-vllm-canary"
    )
    assert cond(out, "CanaryPromoted")["status"] == "True"
    # The new baseline is the canary's measure: the next drift is judged against 3.0.
    assert loop.status["retrain"]["baseline"]["uri"] == NEW
    assert loop.status["retrain"]["baseline"]["meanAcceptanceLength"] == pytest.approx(3.0)
    # Just after the roll the window still holds the old pods' (drifted) counts: not judged yet.
    out = loop.step(at(310), stable_acceptance=window(DRIFTED), stable_uri=NEW)
    assert cond(out, "Drifted")["reason"] == "Settling" and not out.create


def test_a_canary_that_is_not_better_is_rolled_back_with_the_numbers() -> None:
    loop = Loop(body())
    to_canary_running(loop)
    worse = window([0.6, 0.3, 0.2])  # 2.1 < 2.15
    out = loop.step(
        at(280), stable_acceptance=window(DRIFTED), canary_acceptance=worse, canary=canary_deployment(NEW)
    )
    c = loop.status["canary"]
    assert c["phase"] == "RolledBack" and c["decision"].startswith("NotBetter: ")
    assert "2.100 vs stable 2.150" in c["decision"]
    assert out.delete[0]["metadata"]["name"] == "chat-vllm-canary" and out.canary is None
    assert out.stable.source.uri == DRAFT
    assert cond(out, "CanaryPromoted") == {
        "status": "False",
        "reason": "RolledBack",
        "message": c["decision"],
    }
    assert [e.type for e in out.events] == ["Warning"]
    assert loop.status["retrain"]["lastResult"]["result"] == "RolledBack"


def test_too_few_drafts_never_decide_and_the_timeout_rolls_back() -> None:
    loop = Loop(body())
    to_canary_running(loop)
    few = window([0.95, 0.9, 0.9], drafts=99)
    out = loop.step(
        at(500), stable_acceptance=window(DRIFTED), canary_acceptance=few, canary=canary_deployment(NEW)
    )
    assert loop.status["canary"]["phase"] == "Running"
    out = loop.step(
        at(800), stable_acceptance=window(DRIFTED), canary_acceptance=few, canary=canary_deployment(NEW)
    )
    assert (
        loop.status["canary"]["phase"] == "RolledBack"
        and "InsufficientData" in loop.status["canary"]["decision"]
    )
    assert out.delete


def test_switching_retrain_off_mid_training_starts_no_canary_and_stops_a_running_one() -> None:
    loop = Loop(body())
    drift_to_retrain(loop)
    off = body()
    off["spec"].pop("retrain")
    loop.ctx = SpeculatorContext.of(off)
    out = loop.step(at(200), stable_acceptance=window(DRIFTED), trainings={"chat-r1": succeeded(True)})
    assert out.canary is None and loop.status.get("canary") is None
    assert loop.status["retrain"]["lastResult"]["result"] == "Stopped" and not out.create

    loop = Loop(body())
    to_canary_running(loop)
    loop.ctx = SpeculatorContext.of(off)
    out = loop.step(at(230), stable_acceptance=window(DRIFTED), canary=canary_deployment(NEW))
    assert loop.status["canary"]["phase"] == "RolledBack" and "removed" in loop.status["canary"]["decision"]
    assert out.delete and out.canary is None


def test_the_canary_follows_a_changed_canary_size() -> None:
    loop = Loop(body())
    to_canary_running(loop)
    loop.ctx = SpeculatorContext.of(body(canary={"fraction": 1.0, "windowSeconds": 60, "minDrafts": 100}))
    loop.step(at(230), stable_acceptance=window(DRIFTED), canary=canary_deployment(NEW, ready=1))
    assert loop.status["canary"]["replicas"] == 2  # 100 % of spec.replicas 2


def test_a_retrain_the_gate_keeps_back_never_reaches_a_canary() -> None:
    loop = Loop(body())
    drift_to_retrain(loop)
    out = loop.step(at(200), stable_acceptance=window(DRIFTED), trainings={"chat-r1": succeeded(False)})
    assert out.canary is None and loop.status.get("canary") is None
    assert loop.status["retrain"]["lastResult"]["result"] == "NotPromoted"
    assert cond(out, "Retraining")["reason"] == "NotPromoted"


def test_a_new_spec_draft_wins_over_a_promoted_one() -> None:
    loop = Loop(body())
    to_canary_running(loop)
    better = window([0.85, 0.65, 0.5])
    loop.step(
        at(280), stable_acceptance=window(DRIFTED), canary_acceptance=better, canary=canary_deployment(NEW)
    )
    loop.step(at(300), stable_acceptance=better, stable_uri=NEW)
    assert loop.status["draft"]["uri"] == NEW
    moved = body(draft={"uri": "hf://org/another-draft"})
    loop.ctx = SpeculatorContext.of(moved)
    out = loop.step(at(310), stable_acceptance=better, stable_uri=NEW)
    assert out.stable.source.uri == DRAFT  # the base draft of this test stands for the new spec.draft
    assert "promoted" not in loop.status["retrain"] and [e.reason for e in out.events] == ["SpecDraftChanged"]


def undeclared(value: Any, schema: dict[str, Any], path: str = "status") -> list[str]:
    """Keys of a status the CRD schema does not declare (the API server would prune them)."""
    out = []
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, item in value.items():
            if key not in props:
                out.append(f"{path}.{key}")
            else:
                out += undeclared(item, props[key], f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += undeclared(item, schema.get("items") or {}, f"{path}[{i}]")
    return out


def test_every_field_the_loop_writes_is_in_the_crd_schema() -> None:
    from speculators_operator.api.crd import speculator_crd

    schema = speculator_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    loop = Loop(body())
    to_canary_running(loop)
    better = window([0.85, 0.65, 0.5])
    loop.step(
        at(280), stable_acceptance=window(DRIFTED), canary_acceptance=better, canary=canary_deployment(NEW)
    )
    written = copy.deepcopy(loop.status)
    loop.step(at(300), stable_acceptance=better, stable_uri=NEW, canary=canary_deployment(NEW))
    assert loop.status["canary"]["phase"] == "Promoted" and written["canary"]["phase"] == "Promoting"
    assert undeclared(written, schema) == [] and undeclared(loop.status, schema) == []
    assert {"retrain", "canary", "previousDrafts"} <= set(written)
    assert {"promoted", "replaced", "baseline", "trigger", "lastResult"} <= set(written["retrain"])


def test_a_dflash_retrain_canaries_and_promotes_within_its_block() -> None:
    """A retrain may train DFlash (served by vLLM as method dflash): the canary serves it at the stable
    pods' k, never past what one of its blocks drafts, and once promoted the stable pods serve it so."""
    obj = body(numSpeculativeTokens=9, retrain={
        "when": {"dropFraction": 0.2, "forSeconds": 60, "minDrafts": 100},
        "cooldownSeconds": 600,
        "template": {"algorithm": "dflash", "training": {"dflash": {"blockSize": 8}}},
    })  # fmt: skip
    loop = Loop(obj, ResolvedDraft(ModelSource(uri=DRAFT), "eagle3", 9))
    created = drift_to_retrain(loop).create[0]
    assert created["spec"]["algorithm"] == "dflash"
    assert created["spec"]["training"]["dflash"]["blockSize"] == 8
    done = succeeded(True)
    done["status"]["output"].update(method="dflash", numSpeculativeTokens=7, maxSpeculativeTokens=7)
    out = loop.step(at(200), stable_acceptance=window(DRIFTED), trainings={"chat-r1": done})
    assert out.canary is not None
    assert (out.canary.method, out.canary.num_speculative_tokens) == ("dflash", 7)  # stable's 9 > 7
    assert loop.status["canary"]["draft"]["maxSpeculativeTokens"] == 7
    loop.step(at(220), stable_acceptance=window(DRIFTED), canary=canary_deployment(NEW))
    better = window([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    out = loop.step(
        at(280), stable_acceptance=window(DRIFTED), canary_acceptance=better, canary=canary_deployment(NEW)
    )
    assert loop.status["canary"]["phase"] == "Promoting"
    # spec.numSpeculativeTokens (9) is more than the promoted draft's block drafts: it serves 7.
    assert (out.stable.method, out.stable.num_speculative_tokens) == ("dflash", 7)
    assert out.stable.max_speculative_tokens == 7


def test_retrain_names_always_fit() -> None:
    assert retrain_name("chat", 1) == "chat-r1"
    long = "a" * 55
    assert retrain_name(long, 12) == "a" * 51 + "-r12" and len(retrain_name(long, 12)) == 55


def test_derive_renders_the_canary_next_to_the_stable_deployment_with_the_same_k() -> None:
    obj = body(tuning={"mode": "fixed"})
    obj["status"] = {
        "retrain": {"count": 1},
        "canary": {
            "phase": "Running",
            "training": "chat-r1",
            "draft": {"uri": NEW, "method": "eagle3", "numSpeculativeTokens": 5},
            "deployment": "chat-vllm-canary",
            "replicas": 1,
            "createdTime": T0,
            "startTime": T0,
        },
    }
    plan = derive_speculator(
        obj, SpeculatorObserved(acceptance=AcceptanceState(AcceptanceWindow(30))), now=at(10)
    )
    deployments = {d["metadata"]["name"]: d for d in plan.apply if d["kind"] == "Deployment"}
    assert set(deployments) == {"chat-vllm", "chat-vllm-canary"}
    canary = deployments["chat-vllm-canary"]
    assert canary["spec"]["replicas"] == 1
    assert canary["spec"]["template"]["metadata"]["labels"]["speculators.ai/track"] == "canary"
    assert canary["metadata"]["annotations"]["speculators.ai/draft"] == NEW
    args = canary["spec"]["template"]["spec"]["containers"][0]["args"]
    config = json.loads(args[args.index("--speculative-config") + 1])
    assert config["num_speculative_tokens"] == 3  # the stable's k, not the retrain's 5
    assert "speculators.ai/track" not in deployments["chat-vllm"]["spec"]["template"]["metadata"]["labels"]
    service = next(o for o in plan.apply if o["kind"] == "Service")
    assert service["spec"]["selector"] == {
        "speculators.ai/speculator": "chat",
        "app.kubernetes.io/component": "vllm",
    }
    # Capture: the proxy holds the Service's port, vLLM keeps its own; the claim is created.
    pod = deployments["chat-vllm"]["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["containers"]]
    assert names == ["vllm", "capture"]
    proxy = pod["containers"][1]
    assert proxy["command"] == ["speculators", "capture-proxy"]
    assert proxy["ports"] == [{"name": "http", "containerPort": 8100, "protocol": "TCP"}]
    assert (
        "--upstream" in proxy["args"]
        and proxy["args"][proxy["args"].index("--upstream") + 1] == "http://127.0.0.1:8000"
    )
    assert pod["containers"][0]["ports"][0]["name"] == "vllm"
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["port"] == "vllm"
    assert [o["metadata"]["name"] for o in plan.create if o["kind"] == "PersistentVolumeClaim"] == [
        "chat-traffic"
    ]
    assert find(plan.status["conditions"], "CanaryPromoted")["reason"] == "Running"


def test_prometheus_pod_patterns_keep_the_canary_and_the_stable_pods_apart() -> None:
    """With metrics.source prometheus the canary's pods count for the canary's Deployment only."""
    from speculators_operator.metrics.prometheus import deployment_of

    ctx = SpeculatorContext.of(body())
    stable_pod, canary_pod = "chat-vllm-5d8f7c9b4-x2k9q", "chat-vllm-canary-7c9b4d8f5-bz42c"
    assert deployment_of(stable_pod) == ctx.workload_name == "chat-vllm"
    assert deployment_of(canary_pod) == ctx.canary_name == "chat-vllm-canary"


def test_the_loop_is_exported_as_operator_metrics_and_forgotten_with_the_speculator() -> None:
    from prometheus_client import REGISTRY

    from speculators_operator import opmetrics

    def value(name: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"namespace": "ns", "speculator": "metrics-loop"})

    loop = Loop(body())
    to_canary_running(loop)
    better = window([0.85, 0.65, 0.5])
    loop.step(
        at(270), stable_acceptance=window(DRIFTED), canary_acceptance=better, canary=canary_deployment(NEW)
    )
    status = {**loop.status, "conditions": [{"type": "Drifted", "status": "True"}]}
    opmetrics.set_loop("ns", "metrics-loop", status)
    assert value("speculators_retrains") == 1 and value("speculators_drifted") == 1
    assert value("speculators_canary_mean_acceptance_length") == pytest.approx(3.0)
    loop.step(at(280), stable_acceptance=window(DRIFTED), canary_acceptance=worse_than(DRIFTED), canary=None)
    opmetrics.set_loop("ns", "metrics-loop", loop.status)  # rolled back: no canary series any more
    assert value("speculators_canary_mean_acceptance_length") is None and value("speculators_drifted") == 0
    opmetrics.set_loop("ns", "metrics-loop", None)
    assert value("speculators_retrains") is None and value("speculators_drifted") is None


def worse_than(per_position: list[float]) -> dict[str, Any]:
    return window([p * 0.9 for p in per_position])
