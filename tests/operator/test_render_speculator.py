"""The vLLM Deployment, Service, cache PVC and resolve Job of a Speculator, field by field."""

from __future__ import annotations

import json

from spd_testlib import speculator

from speculators_operator.api.common import ModelSource
from speculators_operator.render.common import Images
from speculators_operator.render.speculator import (
    ResolvedDraft,
    SpeculatorContext,
    cache_pvc,
    deployment,
    needs_resolve,
    resolve_job,
    service,
    service_url,
)

IMAGES = Images(runtime="registry.example/runtime:1", vllm="registry.example/vllm:1")
LABELS = {
    "app.kubernetes.io/name": "speculator",
    "app.kubernetes.io/instance": "llama-spd-vllm",
    "app.kubernetes.io/component": "vllm",
    "app.kubernetes.io/managed-by": "speculators-operator",
    "app.kubernetes.io/part-of": "speculators",
    "speculators.ai/speculator": "llama-spd",
}
DRAFT = ResolvedDraft(ModelSource(uri="hf://RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3"), "eagle3", 3)


def _ctx(**spec) -> SpeculatorContext:
    return SpeculatorContext.of(speculator("llama-spd", **spec), IMAGES)


def test_deployment_field_by_field():
    ctx = _ctx(
        verifier={"uri": "hf://meta-llama/Llama-3.1-8B-Instruct", "secretRef": {"name": "hf"}},
        vllm={
            "extraArgs": ["--enable-prefix-caching"],
            "env": [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}],
            "maxModelLen": 8192,
            "gpuMemoryUtilization": 0.9,
            "tensorParallelSize": 2,
        },
        replicas=2,
        cache={"size": "200Gi"},
        startupTimeoutSeconds=3600,
    )
    dep = deployment(ctx, DRAFT)
    assert dep["apiVersion"] == "apps/v1" and dep["kind"] == "Deployment"
    assert dep["metadata"]["name"] == "llama-spd-vllm"
    assert dep["metadata"]["labels"] == LABELS
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "Speculator"
    spec = dep["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"] == {
        "matchLabels": {
            "app.kubernetes.io/instance": "llama-spd-vllm",
            "speculators.ai/speculator": "llama-spd",
        }
    }
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert spec["progressDeadlineSeconds"] == 4200
    template = spec["template"]
    assert template["metadata"]["labels"] == LABELS
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8000",
        "prometheus.io/path": "/metrics",
    }
    pod = template["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert "restartPolicy" not in pod
    assert pod["volumes"] == [
        {"name": "scratch", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "models", "persistentVolumeClaim": {"claimName": "llama-spd-cache"}},
    ]
    fetch_verifier, fetch_draft = pod["initContainers"]
    assert fetch_verifier["command"] == ["speculators", "fetch"]
    assert fetch_verifier["args"] == [
        "hf://meta-llama/Llama-3.1-8B-Instruct",
        "--dest",
        "/models/verifier",
        "--summary-path",
        "/dev/termination-log",
    ]
    assert fetch_verifier["envFrom"] == [{"secretRef": {"name": "hf"}}]
    assert fetch_draft["args"] == [
        "hf://RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3",
        "--dest",
        "/models/draft",
        "--summary-path",
        "/dev/termination-log",
    ]
    assert "envFrom" not in fetch_draft
    (vllm,) = pod["containers"]
    assert vllm["name"] == "vllm" and vllm["image"] == "registry.example/vllm:1"
    assert vllm["command"] == ["vllm"]
    assert vllm["args"] == [
        "serve",
        "/models/verifier",
        "--speculative-config",
        '{"model":"/models/draft","method":"eagle3","num_speculative_tokens":3}',
        "--tensor-parallel-size",
        "2",
        "--max-model-len",
        "8192",
        "--gpu-memory-utilization",
        "0.9",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--served-model-name",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--enable-prefix-caching",
    ]
    assert json.loads(vllm["args"][3]) == {
        "model": "/models/draft",
        "method": "eagle3",
        "num_speculative_tokens": 3,
    }
    assert "envFrom" not in vllm  # the server never sees the hub token: the init containers fetched
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    assert env["HOME"] == "/scratch/home" and env["HF_HOME"] == "/scratch/hf"
    assert env["VLLM_CACHE_ROOT"] == "/scratch/cache/vllm" and env["VLLM_LOGGING_LEVEL"] == "DEBUG"
    assert vllm["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert vllm["resources"] == {"limits": {"nvidia.com/gpu": 2}}
    assert vllm["startupProbe"] == {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 360,
    }
    assert vllm["readinessProbe"]["httpGet"] == {"path": "/v1/models", "port": "http"}
    assert vllm["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert vllm["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in vllm["volumeMounts"]
    assert {"name": "models", "mountPath": "/models"} in vllm["volumeMounts"]


def test_pvc_sources_are_mounted_read_only_and_peagle_is_served_as_eagle3():
    ctx = _ctx(
        verifier={"uri": "pvc://models/llama-3.1-8b"},
        draft={"uri": "pvc://drafts/llama/eagle3"},
        method="peagle",
        numSpeculativeTokens=5,
        securityContext={"runAsUser": 1000, "fsGroup": 1000},
    )
    assert not needs_resolve(ctx)
    draft = ResolvedDraft(ModelSource(uri="pvc://drafts/llama/eagle3"), "peagle", 5)
    pod = deployment(ctx, draft)["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsUser": 1000,
        "fsGroup": 1000,
    }
    assert {"name": "models", "emptyDir": {}} in pod["volumes"]
    assert {"name": "pvc-models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod[
        "volumes"
    ]
    (vllm,) = pod["containers"]
    assert vllm["args"][1] == "/mnt/pvc/models/llama-3.1-8b"
    assert json.loads(vllm["args"][3]) == {
        "model": "/mnt/pvc/drafts/llama/eagle3",
        "method": "eagle3",
        "num_speculative_tokens": 5,
        "parallel_drafting": True,
    }
    assert (
        "--served-model-name" in vllm["args"]
        and vllm["args"][vllm["args"].index("--served-model-name") + 1] == "llama-spd"
    )


def test_service_and_url():
    ctx = _ctx(service={"type": "LoadBalancer", "port": 80, "annotations": {"a": "b"}})
    svc = service(ctx)
    assert svc["metadata"]["name"] == "llama-spd" and svc["metadata"]["annotations"] == {"a": "b"}
    assert svc["metadata"]["labels"]["app.kubernetes.io/component"] == "service"
    assert svc["spec"] == {
        "type": "LoadBalancer",
        # Stable and canary pods alike (a canary takes its share of the traffic).
        "selector": {"speculators.ai/speculator": "llama-spd", "app.kubernetes.io/component": "vllm"},
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
    }
    assert service_url(ctx) == "http://llama-spd.ns.svc:80"


def test_cache_pvc():
    assert cache_pvc(_ctx()) is None
    assert cache_pvc(_ctx(cache={"claimName": "models-cache"})) is None
    pvc = cache_pvc(_ctx(cache={"size": "100Gi", "storageClassName": "nfs"}, replicas=3))
    assert pvc["metadata"]["name"] == "llama-spd-cache"
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "100Gi"}},
        "storageClassName": "nfs",
    }


def test_resolve_job():
    ctx = _ctx(
        draft={
            "uri": "hf://RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3",
            "revision": "v1",
            "secretRef": {"name": "hf"},
        }
    )
    assert needs_resolve(ctx)
    job = resolve_job(ctx)
    assert job["metadata"]["name"] == "llama-spd-resolve"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "resolve"
    spec = job["spec"]
    assert spec["backoffLimit"] == 3 and spec["ttlSecondsAfterFinished"] == 3600
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (fetch,) = pod["initContainers"]
    assert fetch["args"] == [
        "hf://RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3",
        "--dest",
        "/models/draft",
        "--revision",
        "v1",
        "--summary-path",
        "/dev/termination-log",
    ]
    assert fetch["envFrom"] == [{"secretRef": {"name": "hf"}}]
    (inspect,) = pod["containers"]
    assert inspect["command"] == ["speculators", "inspect"]
    assert inspect["args"] == ["/models/draft", "--json", "--summary-path", "/dev/termination-log"]
