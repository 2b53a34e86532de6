"""backend: kserve and spec.route, without a cluster: the ServingRuntime, InferenceService and Route the
operator renders, and how their status folds back into the Speculator (pure functions)."""

from __future__ import annotations

import json
from typing import Any

from pod_rules import kserve_predictor_pod
from shiplib import speculator_body

from speculators_operator.api.common import ModelSource
from speculators_operator.render import kserve, route
from speculators_operator.render.common import Images
from speculators_operator.render.speculator import ResolvedDraft, SpeculatorContext
from speculators_operator.status.conditions import Cond
from speculators_operator.status.kserve import deployment_condition, url
from speculators_operator.status.route import admitted_host, route_condition
from speculators_operator.status.speculator import SpeculatorObserved, derive_speculator

IMAGES = Images(runtime="registry.example/runtime:1", vllm="registry.example/vllm:1")
DRAFT = ResolvedDraft(ModelSource(uri="hf://RedHatAI/granite-3.3-8b-instruct-speculator.eagle3"), "eagle3", 3)
NOW = "2026-01-01T00:00:00Z"


def _ctx(**spec: Any) -> SpeculatorContext:
    body = speculator_body(backend="kserve", **spec)
    body["metadata"]["annotations"] = {"openshift.io/display-name": "Granite 3.3 8B + EAGLE-3"}
    body["metadata"]["labels"] = {"app.kubernetes.io/instance": "argo-app"}
    return SpeculatorContext.of(body, IMAGES)


def _spec_config(args: list[str]) -> dict[str, Any]:
    return json.loads(args[args.index("--speculative-config") + 1])


def test_the_predictor_pod_runs_vllm_with_the_draft_in_speculative_config() -> None:
    """The runtime holds vLLM without the draft; the predictor's model args add --speculative-config (KServe
    appends them), so stable and canary predictors share one runtime, each with its own draft."""
    ctx = _ctx()
    sr = kserve.serving_runtime(ctx, DRAFT)
    assert "--speculative-config" not in sr["spec"]["containers"][0]["args"]
    model = kserve.inference_service(ctx, DRAFT)["spec"]["predictor"]["model"]
    assert model["args"][0] == "--speculative-config" and len(model["args"]) == 2
    assert sr["apiVersion"] == "serving.kserve.io/v1alpha1" and sr["metadata"]["name"] == "granite-vllm"
    assert sr["metadata"]["labels"]["opendatahub.io/dashboard"] == "true"
    assert sr["metadata"]["labels"]["app.kubernetes.io/instance"] == "granite-vllm"  # never the parent's
    assert sr["metadata"]["ownerReferences"][0]["uid"] == "uid-granite"
    assert sr["spec"]["supportedModelFormats"] == [{"name": "vLLM", "autoSelect": False}]
    (container,) = sr["spec"]["containers"]
    assert container["name"] == "kserve-container" and container["image"] == "registry.example/vllm:1"
    argv = container["command"] + container["args"]
    assert argv[:3] == ["vllm", "serve", "/mnt/models"]  # the verifier from storageUri
    pod = kserve_predictor_pod(sr, kserve.inference_service(ctx, DRAFT))
    (merged,) = pod["containers"]
    assert merged["args"][: len(container["args"])] == container["args"]
    assert _spec_config(merged["args"]) == {
        "model": "/models/draft",
        "method": "eagle3",
        "num_speculative_tokens": 3,
    }
    assert container["startupProbe"]["httpGet"]["path"] == "/v1/models"
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 1800
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["HOME"].startswith("/scratch") and env["HF_HOME"].startswith("/scratch")
    volumes = {v["name"]: v for v in sr["spec"]["volumes"]}
    assert volumes["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory"}}
    mounts = {m["mountPath"] for m in merged["volumeMounts"]}
    assert {"/dev/shm", "/scratch", "/models"} <= mounts
    assert "/models" not in {m["mountPath"] for m in container["volumeMounts"]}  # the predictor's volume


def test_inference_service_is_standard_mode_and_listed_in_the_dashboard() -> None:
    ctx = _ctx(replicas=2)
    isvc = kserve.inference_service(ctx, DRAFT)
    meta = isvc["metadata"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and meta["name"] == "granite"
    assert meta["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert meta["annotations"]["openshift.io/display-name"] == "Granite 3.3 8B + EAGLE-3"
    assert meta["labels"]["opendatahub.io/dashboard"] == "true"
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["modelFormat"] == {"name": "vLLM"}
    assert predictor["model"]["runtime"] == "granite-vllm"
    assert predictor["model"]["storageUri"] == "hf://ibm-granite/granite-3.3-8b-instruct"
    assert predictor["model"]["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert predictor["minReplicas"] == predictor["maxReplicas"] == 2
    assert predictor["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # The pods carry the operator's selector labels, so scraping and status find them as with a Deployment.
    assert predictor["labels"]["speculators.ai/speculator"] == "granite"
    assert predictor["labels"]["app.kubernetes.io/instance"] == "granite-vllm"
    assert predictor["labels"]["app.kubernetes.io/component"] == "vllm"
    (fetch,) = predictor["initContainers"]
    assert fetch["name"] == "fetch-draft" and fetch["image"] == "registry.example/runtime:1"
    assert fetch["command"] == ["speculators", "fetch"] and fetch["args"][0].startswith("hf://RedHatAI/")
    assert "serving.kserve.io/stop" not in meta["annotations"]


def test_verifier_with_a_secret_is_fetched_by_our_init_container_not_storage_uri() -> None:
    ctx = _ctx(verifier={"uri": "s3://models/granite", "secretRef": {"name": "s3-creds"}})
    isvc = kserve.inference_service(ctx, DRAFT)
    predictor = isvc["spec"]["predictor"]
    assert "storageUri" not in predictor["model"]
    fetch = {c["name"]: c for c in predictor["initContainers"]}
    assert fetch["fetch-verifier"]["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    container = kserve.serving_runtime(ctx, DRAFT)["spec"]["containers"][0]
    assert container["args"][:2] == ["serve", "/models/verifier"]
    everything = json.dumps([isvc, kserve.serving_runtime(ctx, DRAFT)])
    assert everything.count("s3-creds") == 1  # by reference, once, in envFrom


def test_hf_revision_and_pvc_sources() -> None:
    ctx = _ctx(verifier={"uri": "hf://ibm-granite/granite-3.3-8b-instruct", "revision": "v1.2"})
    assert kserve.inference_service(ctx, DRAFT)["spec"]["predictor"]["model"]["storageUri"].endswith(":v1.2")
    pvc_draft = ResolvedDraft(ModelSource(uri="pvc://workspace/granite-train/model"), "eagle3", 4)
    ctx = _ctx(verifier={"uri": "pvc://models/granite"})
    isvc = kserve.inference_service(ctx, pvc_draft)
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "pvc://models/granite"
    assert "initContainers" not in predictor  # nothing to download
    claims = {
        v["persistentVolumeClaim"]["claimName"] for v in predictor["volumes"] if "persistentVolumeClaim" in v
    }
    assert claims == {"workspace"}
    container = kserve_predictor_pod(kserve.serving_runtime(ctx, pvc_draft), isvc)["containers"][0]
    assert _spec_config(container["args"])["model"] == "/mnt/pvc/workspace/granite-train/model"
    assert {"name": "pvc-workspace", "mountPath": "/mnt/pvc/workspace", "readOnly": True} in container[
        "volumeMounts"
    ]


def test_zero_replicas_stops_the_inference_service() -> None:
    isvc = kserve.inference_service(_ctx(replicas=0), DRAFT)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/stop"] == "true"
    assert (
        isvc["spec"]["predictor"]["minReplicas"] == 1
    )  # KServe's Standard mode needs >= 1; stop scales to 0


def test_scheduling_and_cache_reach_the_predictor_pod() -> None:
    ctx = _ctx(
        scheduling={
            "nodeSelector": {"gpu": "h100"},
            "serviceAccountName": "models",
            "priorityClassName": "hi",
        },
        cache={"size": "200Gi"},
    )
    predictor = kserve.inference_service(ctx, DRAFT)["spec"]["predictor"]
    assert predictor["nodeSelector"] == {"gpu": "h100"} and predictor["serviceAccountName"] == "models"
    assert predictor["priorityClassName"] == "hi"
    models = next(v for v in predictor["volumes"] if v["name"] == "models")
    assert models == {"name": "models", "persistentVolumeClaim": {"claimName": "granite-cache"}}


def test_route_targets_the_serving_service_with_edge_tls() -> None:
    r = route.route(_ctx(route={"enabled": True, "host": "granite.apps.example.com"}))
    assert r["apiVersion"] == "route.openshift.io/v1" and r["metadata"]["name"] == "granite"
    assert r["spec"]["to"] == {"kind": "Service", "name": "granite-predictor", "weight": 100}
    assert r["spec"]["tls"] == {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"}
    assert r["spec"]["host"] == "granite.apps.example.com" and r["spec"]["port"] == {"targetPort": 8000}
    plain = route.route(SpeculatorContext.of(speculator_body(route={"enabled": True}), IMAGES))
    assert plain["spec"]["to"]["name"] == "granite" and "host" not in plain["spec"]


def _isvc(generation: int = 1, observed: int | None = 1, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "granite", "generation": generation}, "status": dict(status)}
    if observed is not None:
        body["status"]["observedGeneration"] = observed
    return body


def _ready(status: str, reason: str = "", message: str = "", **more: Any) -> dict[str, Any]:
    conds = [{"type": "Ready", "status": status, "reason": reason, "message": message}]
    conds += [{"type": t, "status": s, "reason": r} for t, (s, r) in more.items()]
    return {"conditions": conds}


def test_deployment_condition_from_the_inference_service() -> None:
    ctx = _ctx()
    assert deployment_condition(ctx, None, None).reason == "Creating"
    assert deployment_condition(ctx, _isvc(2, 1, **_ready("True")), None).status == "Unknown"  # stale
    ok = deployment_condition(ctx, _isvc(**_ready("True")), None)
    assert (ok.status, ok.reason) == ("True", "Available")
    # KServe shows Ready=False during a normal rollout: only failures are False.
    rolling = deployment_condition(ctx, _isvc(**_ready("False", "MinimumReplicasUnavailable", "0/1")), None)
    assert (rolling.status, rolling.reason) == ("Unknown", "Progressing")
    failed = deployment_condition(
        ctx, _isvc(**_ready("False", PredictorReady=("False", "ModelLoadFailed"))), None
    )
    assert (failed.status, failed.reason) == ("False", "ModelLoadFailed")
    blocked = _isvc(
        **_ready("False"),
        modelStatus={
            "transitionStatus": "BlockedByFailedLoad",
            "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "CUDA out of memory"},
        },
    )
    cond = deployment_condition(ctx, blocked, None)
    assert (cond.status, cond.reason, cond.message) == ("False", "ModelLoadFailed", "CUDA out of memory")
    crash = Cond("DeploymentReady", "False", "CrashLoopBackOff", "pod x")
    assert deployment_condition(ctx, _isvc(**_ready("Unknown")), crash) == crash


def test_stopped_inference_service_is_scaled_to_zero() -> None:
    ctx = _ctx(replicas=0)
    isvc = _isvc(**_ready("False", "Stopped", Stopped=("True", "Stopped")))
    isvc["metadata"]["annotations"] = {"serving.kserve.io/stop": "true"}
    cond = deployment_condition(ctx, isvc, None)
    assert (cond.status, cond.reason) == ("True", "ScaledToZero")


def test_url_prefers_kserves_url_then_its_address() -> None:
    assert url(_isvc(url="https://granite.apps.example.com")) == "https://granite.apps.example.com"
    assert url(_isvc(address={"url": "http://granite-predictor.ns.svc.cluster.local"})).startswith(
        "http://granite-"
    )
    assert url(None) is None


def test_route_admission() -> None:
    pending = {
        "status": {"ingress": [{"host": "h", "conditions": [{"type": "Admitted", "status": "Unknown"}]}]}
    }
    admitted = {
        "status": {"ingress": [{"host": "h.apps", "conditions": [{"type": "Admitted", "status": "True"}]}]}
    }
    rejected = {
        "status": {
            "ingress": [
                {
                    "host": "h",
                    "conditions": [
                        {
                            "type": "Admitted",
                            "status": "False",
                            "reason": "HostAlreadyClaimed",
                            "message": "taken",
                        }
                    ],
                }
            ]
        }
    }
    assert admitted_host(admitted) == "h.apps" and admitted_host(pending) is None
    assert route_condition(admitted, served=True, name="g").status == "True"
    assert route_condition(pending, served=True, name="g").reason == "Pending"
    assert route_condition(rejected, served=True, name="g").reason == "HostAlreadyClaimed"
    assert route_condition(None, served=False, name="g").reason == "RouteAPINotServed"


def _cond(plan: Any, ctype: str) -> dict[str, Any]:
    return next(c for c in plan.status["conditions"] if c["type"] == ctype)


def test_derive_applies_kserve_children_and_folds_their_status() -> None:
    body = speculator_body(backend="kserve", route={"enabled": True})
    observed = SpeculatorObserved(kserve_served=True, routes_served=True)
    plan = derive_speculator(body, observed, IMAGES, NOW)
    assert [o["kind"] for o in plan.apply] == ["ServingRuntime", "InferenceService", "Route"]
    assert _cond(plan, "DeploymentReady")["reason"] == "Creating" and plan.status["phase"] == "Deploying"

    observed.inference_service = {**_isvc(**_ready("True")), "kind": "InferenceService"}
    observed.inference_service["status"]["url"] = "http://granite-predictor.ns.svc.cluster.local"
    plan = derive_speculator(body, observed, IMAGES, NOW)
    assert plan.status["phase"] == "Running" and _cond(plan, "Ready")["status"] == "True"
    assert plan.status["url"] == "http://granite-predictor.ns.svc.cluster.local"
    assert _cond(plan, "RouteAdmitted")["status"] == "Unknown"

    observed.route = {
        "status": {
            "ingress": [{"host": "granite.apps", "conditions": [{"type": "Admitted", "status": "True"}]}]
        }
    }
    plan = derive_speculator(body, observed, IMAGES, NOW)
    assert plan.status["url"] == "https://granite.apps" and _cond(plan, "RouteAdmitted")["status"] == "True"
    assert _cond(plan, "Ready")["message"] == "serving at https://granite.apps"


def test_route_on_a_cluster_without_routes_does_not_gate_ready() -> None:
    body = speculator_body(route={"enabled": True})
    deployment = {
        "kind": "Deployment",
        # The operator's own annotation: the draft this Deployment's template serves.
        "metadata": {"generation": 1, "annotations": {"speculators.ai/draft": body["spec"]["draft"]["uri"]}},
        "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1},
    }
    observed = SpeculatorObserved(deployment=deployment, service={"kind": "Service"}, routes_served=False)
    plan = derive_speculator(body, observed, IMAGES, NOW)
    assert _cond(plan, "RouteAdmitted")["reason"] == "RouteAPINotServed"
    assert _cond(plan, "Ready")["status"] == "True" and "Route" not in [o["kind"] for o in plan.apply]


def test_switching_backends_deletes_the_other_backends_children() -> None:
    old_deployment = {
        "kind": "Deployment",
        "metadata": {"name": "granite-vllm", "namespace": "ns", "uid": "d"},
    }
    old_service = {"kind": "Service", "metadata": {"name": "granite", "namespace": "ns", "uid": "s"}}
    plan = derive_speculator(
        speculator_body(backend="kserve"),
        SpeculatorObserved(kserve_served=True, deployment=old_deployment, service=old_service),
        IMAGES,
        NOW,
    )
    assert [o["kind"] for o in plan.delete] == ["Deployment", "Service"]
    isvc = {"kind": "InferenceService", "metadata": {"name": "granite", "namespace": "ns", "uid": "i"}}
    plan = derive_speculator(speculator_body(), SpeculatorObserved(inference_service=isvc), IMAGES, NOW)
    assert [o["kind"] for o in plan.delete] == ["InferenceService"]


def test_kserve_pods_are_found_under_the_predictor_deployment_name() -> None:
    assert _ctx().workload_name == "granite-predictor"
    assert SpeculatorContext.of(speculator_body(), IMAGES).workload_name == "granite-vllm"
