"""The closed loop on backend kserve, as pure functions: the canary is the InferenceService's own
spec.canary (KServe >= 0.20, Standard mode), which KServe runs as Deployment <name>-canary-predictor and
weights at its gateway; the Route (when enabled) splits the same way. A KServe that prunes spec.canary
rolls the canary back with the reason instead of waiting for its timeout."""

from __future__ import annotations

import json
from typing import Any

from localrun.kserve_standin import canary_predictor, predictor_pod
from test_retrain_loop import DRAFT, DRIFTED, NEW, Loop, at, body, drift_to_retrain, succeeded, window

from speculators_operator import constants as c
from speculators_operator.metrics.store import AcceptanceState
from speculators_operator.metrics.window import AcceptanceWindow
from speculators_operator.render.kserve import canary_pruned, canary_traffic_percent
from speculators_operator.render.speculator import SpeculatorContext
from speculators_operator.status.conditions import find
from speculators_operator.status.speculator import SpeculatorObserved, derive_speculator

DATA = {"datasets": [{"uri": "hf://org/chats"}], "regenerateResponses": True}


def kserve_body(replicas: int = 4, **spec: Any) -> dict[str, Any]:
    obj = body(
        backend="kserve",
        replicas=replicas,
        traffic={"capture": {"enabled": False}},
        retrain={
            "when": {"dropFraction": 0.2, "forSeconds": 60, "minDrafts": 100},
            "cooldownSeconds": 600,
            "template": {"data": DATA},
        },
        **spec,
    )
    obj["metadata"].update(namespace="ns", uid="spd-uid")
    return obj


def kserve_deployment(name: str, uri: str, ready: int = 1, replicas: int = 1) -> dict[str, Any]:
    """KServe's Deployment: our predictor annotations are on its pod template only."""
    return {
        "metadata": {
            "name": name,
            "generation": 2,
            "annotations": {"deployment.kubernetes.io/revision": "2"},
        },
        "spec": {"replicas": replicas, "template": {"metadata": {"annotations": {c.ANNOTATION_DRAFT: uri}}}},
        "status": {
            "observedGeneration": 2,
            "readyReplicas": ready,
            "updatedReplicas": ready,
            "replicas": ready,
        },
    }


def ready_isvc(
    spec: dict[str, Any] | None = None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "kind": "InferenceService",
        "metadata": {"name": "chat", "namespace": "ns", "generation": 3, "annotations": annotations or {}},
        "spec": spec or {"predictor": {}},
        "status": {
            "observedGeneration": 3,
            "url": "http://chat-predictor.ns.svc.cluster.local",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def running_canary() -> dict[str, Any]:
    return {
        "phase": "Running",
        "training": "chat-r1",
        "draft": {"uri": NEW, "method": "eagle3", "numSpeculativeTokens": 3},
        "deployment": "chat-canary-predictor",
        "replicas": 1,
        "createdTime": at(0),
        "startTime": at(0),
    }


def test_the_kserve_canary_is_the_inference_services_spec_canary_and_the_route_splits_alike() -> None:
    obj = kserve_body(route={"enabled": True})
    obj["status"] = {"retrain": {"count": 1}, "canary": running_canary()}
    observed = SpeculatorObserved(
        kserve_served=True,
        routes_served=True,
        inference_service=ready_isvc(),
        kserve_predictor=kserve_deployment("chat-predictor", DRAFT, ready=3, replicas=3),
        kserve_canary=kserve_deployment("chat-canary-predictor", NEW),
        acceptance=AcceptanceState(AcceptanceWindow(30)),
    )
    plan = derive_speculator(obj, observed, now=at(10))
    kinds = sorted(o["kind"] for o in plan.apply)
    assert kinds == ["InferenceService", "Route", "ServingRuntime"]  # no Deployment of ours
    isvc = next(o for o in plan.apply if o["kind"] == "InferenceService")
    (canary,) = isvc["spec"]["canary"]
    # 1 canary pod of 4: KServe runs 3 stable + 1 canary, so the canary's share is 25 %.
    assert canary["trafficPercent"] == 25
    predictor = canary["predictor"]
    assert predictor["name"] == "canary" and predictor["minReplicas"] == 1 and "maxReplicas" not in predictor
    assert predictor["labels"][c.LABEL_TRACK] == c.TRACK_CANARY
    assert predictor["labels"][c.LABEL_INSTANCE] == "chat-canary-predictor"
    assert predictor["annotations"][c.ANNOTATION_DRAFT] == NEW
    # The retrained draft lies in its training's workspace: the canary pods mount that claim.
    claims = [
        v["persistentVolumeClaim"]["claimName"] for v in predictor["volumes"] if "persistentVolumeClaim" in v
    ]
    assert "chat-r1-workspace" in claims
    assert "chat-r1-workspace" not in str(isvc["spec"]["predictor"]["volumes"])
    # KServe validates each predictor alone: the canary's names the same model and runtime.
    same = ("modelFormat", "runtime", "resources")
    stable_model = isvc["spec"]["predictor"]["model"]
    assert {k: predictor["model"][k] for k in same} == {k: stable_model[k] for k in same}
    # The pod KServe makes of it (the canary over the stable predictor, on the one runtime) drafts with
    # the retrained draft, mounted from its claim, at the stable pods' k.
    runtime = next(o for o in plan.apply if o["kind"] == "ServingRuntime")
    pod = predictor_pod(runtime, canary_predictor(isvc["spec"]["predictor"], predictor))
    args = pod["containers"][0]["args"]
    config = json.loads(args[args.index("--speculative-config") + 1])
    assert config["model"] == "/mnt/pvc/chat-r1-workspace/chat-r1/model"
    assert config["num_speculative_tokens"] == 3
    assert args.count("--speculative-config") == 1
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/mnt/pvc/chat-r1-workspace"] in {v["name"] for v in pod["volumes"]}
    assert pod["volumes"] == predictor_pod(runtime, predictor)["volumes"]
    stable = isvc["spec"]["predictor"]
    assert c.LABEL_TRACK not in stable["labels"] and stable["annotations"][c.ANNOTATION_DRAFT] == DRAFT
    assert isvc["metadata"]["annotations"][c.ANNOTATION_CANARY] == NEW
    route = next(o for o in plan.apply if o["kind"] == "Route")
    assert route["spec"]["to"] == {"kind": "Service", "name": "chat-predictor", "weight": 75}
    assert route["spec"]["alternateBackends"] == [
        {"kind": "Service", "name": "chat-canary-predictor", "weight": 25}
    ]
    assert find(plan.status["conditions"], "CanaryPromoted")["reason"] == "Running"
    # KServe's canary pods are not the Speculator's replicas.
    assert plan.status["replicas"] == 0  # no pods observed in this test


def test_traffic_percent_follows_the_pods_kserve_runs() -> None:
    def pct(stable: int, **canary: Any) -> int:
        return canary_traffic_percent(SpeculatorContext.of(kserve_body(stable, canary=canary)))

    assert pct(1) == 50  # KServe keeps at least one stable pod
    assert pct(4) == 25
    assert pct(10, fraction=0.2) == 20
    assert pct(2, replicas=2) == 67  # 2 canary pods and the 1 stable pod KServe keeps


def test_kserve_canary_promoted_without_deleting_kserves_deployment() -> None:
    loop = Loop(kserve_body())
    drift_to_retrain(loop)
    assert loop.status["retrain"]["active"] == "chat-r1"
    out = loop.step(
        at(200),
        stable_acceptance=window(DRIFTED),
        trainings={"chat-r1": succeeded(True)},
        canary_owned=False,
    )
    assert loop.status["canary"]["deployment"] == "chat-canary-predictor"
    assert out.canary is not None and out.canary.source.uri == NEW
    canary = kserve_deployment("chat-canary-predictor", NEW)
    loop.step(at(220), stable_acceptance=window(DRIFTED), canary=canary, canary_owned=False)
    assert loop.status["canary"]["phase"] == "Running"  # read from the pod template's annotation
    better = window([0.85, 0.65, 0.5])
    kw: dict[str, Any] = {"canary": canary, "canary_owned": False}
    loop.step(at(280), stable_acceptance=window(DRIFTED), canary_acceptance=better, **kw)
    assert loop.status["canary"]["phase"] == "Promoting"
    out = loop.step(at(300), stable_acceptance=better, stable_uri=NEW, **kw)
    assert loop.status["canary"]["phase"] == "Promoted"
    # KServe removes its canary Deployment when spec.canary goes: nothing for us to delete.
    assert out.canary is None and not out.delete


def test_a_kserve_that_pruned_spec_canary_rolls_the_canary_back_with_the_reason() -> None:
    obj = kserve_body()
    obj["status"] = {"retrain": {"count": 1}, "canary": {**running_canary(), "phase": "Starting"}}
    pruned = ready_isvc(annotations={c.ANNOTATION_CANARY: NEW})  # applied with spec.canary, none kept
    assert canary_pruned(pruned) and not canary_pruned(ready_isvc())
    observed = SpeculatorObserved(
        kserve_served=True,
        inference_service=pruned,
        kserve_predictor=kserve_deployment("chat-predictor", DRAFT, ready=4, replicas=4),
        acceptance=AcceptanceState(AcceptanceWindow(30)),
    )
    plan = derive_speculator(obj, observed, now=at(10))
    assert plan.status["canary"]["phase"] == "RolledBack"
    rolled = find(plan.status["conditions"], "CanaryPromoted")
    assert rolled["reason"] == "RolledBack" and rolled["message"].startswith("CanaryUnsupported: ")
    assert "KServe 0.20" in rolled["message"]
    isvc = next(o for o in plan.apply if o["kind"] == "InferenceService")
    assert "canary" not in isvc["spec"] and c.ANNOTATION_CANARY not in isvc["metadata"]["annotations"]
    assert "CanaryRolledBack" in [e.reason for e in plan.events]


def test_kserve_ready_waits_for_its_deployment_to_serve_the_new_draft() -> None:
    obj = kserve_body()
    obj["status"] = {
        "retrain": {"promoted": {"uri": NEW, "method": "eagle3", "numSpeculativeTokens": 3},
                    "specDraft": f"uri:{DRAFT}@"},
    }  # fmt: skip
    old = kserve_deployment("chat-predictor", DRAFT, ready=4, replicas=4)
    observed = SpeculatorObserved(kserve_served=True, inference_service=ready_isvc(), kserve_predictor=old)
    plan = derive_speculator(obj, observed, now=at(10))
    assert plan.status["draft"]["uri"] == NEW
    ready = find(plan.status["conditions"], "DeploymentReady")
    assert (ready["status"], ready["reason"]) == ("Unknown", "Progressing")
    observed.kserve_predictor = kserve_deployment("chat-predictor", NEW, ready=4, replicas=4)
    plan = derive_speculator(obj, observed, now=at(20))
    assert find(plan.status["conditions"], "DeploymentReady")["status"] == "True"


def test_a_kserve_retrain_regenerates_against_the_predictor_service() -> None:
    loop = Loop(kserve_body())
    out = drift_to_retrain(loop)
    data = out.create[0]["spec"]["data"]
    assert data["datasets"] == DATA["datasets"]
    assert data["regenerateEndpoint"] == "http://chat-predictor.ns.svc:80/v1"


def test_switching_to_kserve_deletes_our_canary_deployment() -> None:
    obj = kserve_body()
    ours = {"kind": "Deployment", "metadata": {"name": "chat-vllm-canary", "namespace": "ns", "uid": "d"}}
    plan = derive_speculator(obj, SpeculatorObserved(kserve_served=True, canary=ours), now=at(10))
    assert ours in plan.delete
