"""Speculator against the real control plane: draft resolution, the exact Deployment and Service, waiting on
a trainingRef, scale subresource, rolling updates, drift of the children undone, and live acceptance
scraped over HTTP.

The vLLM pods run on kwok nodes (no containers); where a running vLLM server is needed, the test serves
real vLLM exposition text on the pod's own IP and port (VllmStandIn, a stand-in for the vLLM server).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Kube, OperatorProcess, VllmStandIn, free_port
from spd_testlib import (
    API,
    EVAL,
    FIXTURE_METRICS,
    INSPECT,
    PREPARE,
    TRAIN,
    assert_subset,
    cond,
    scaled_fixture,
    speculator_body,
    training_body,
)

from speculators_operator.api.common import ModelSource
from speculators_operator.render.speculator import (
    ResolvedDraft,
    SpeculatorContext,
    deployment,
    resolve_job,
    service,
)

pytestmark = pytest.mark.kwok

FIXTURE = FIXTURE_METRICS.read_text()


def test_hub_draft_is_resolved_then_served(operator: OperatorProcess, k: Kube) -> None:
    k.create(
        speculator_body(
            podMetadata={"annotations": {"sim.speculators.ai/termination-message": json.dumps(INSPECT)}}
        )
    )
    job = k.wait(lambda: k.get("Job", "llama-resolve"), what="resolve Job")
    body = k.get("Speculator", "llama")
    assert_subset(resolve_job(SpeculatorContext.of(body)), job)
    status = k.wait_phase("Speculator", "llama", "Running")
    assert status["draft"] == {
        "uri": "hf://RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3",
        "method": "eagle3",
        "numSpeculativeTokens": 3,
    }
    assert cond(status, "DraftResolved")["reason"] == "Resolved"
    assert cond(status, "Ready")["status"] == "True" and cond(status, "DeploymentReady")["status"] == "True"
    assert status["url"] == f"http://llama.{k.ns}.svc:8000"
    assert (status["replicas"], status["readyReplicas"], status["updatedReplicas"]) == (1, 1, 1)

    # The Deployment and Service are exactly what render produces for the resolved draft.
    body = k.get("Speculator", "llama")
    ctx = SpeculatorContext.of(body)
    draft = ResolvedDraft(ModelSource(uri=body["spec"]["draft"]["uri"]), "eagle3", 3)
    dep = k.get("Deployment", "llama-vllm")
    assert_subset(deployment(ctx, draft), dep)
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:4] == [
        "serve",
        "/models/verifier",
        "--speculative-config",
        '{"model":"/models/draft","method":"eagle3","num_speculative_tokens":3}',
    ]
    assert_subset(service(ctx), k.get("Service", "llama"))
    pods = k.pods("speculators.ai/speculator=llama,app.kubernetes.io/component=vllm")
    assert len(pods) == 1  # admitted under Pod Security "restricted"

    # kubectl scale / HPA go through the scale subresource into spec.replicas.
    scale = k.api.request("GET", f"/apis/{API}/namespaces/{k.ns}/speculators/llama/scale")
    assert (
        scale["status"]["selector"] == "app.kubernetes.io/instance=llama-vllm,speculators.ai/speculator=llama"
    )
    k.api.request(
        "PATCH",
        f"/apis/{API}/namespaces/{k.ns}/speculators/llama/scale",
        body={"spec": {"replicas": 2}},
        content_type="application/merge-patch+json",
    )
    k.wait(lambda: k.get("Deployment", "llama-vllm"), lambda d: d["spec"]["replicas"] == 2, what="2 replicas")
    k.wait_status(
        "Speculator",
        "llama",
        lambda s: s.get("readyReplicas") == 2 and s.get("phase") == "Running",
        "2 ready replicas",
    )

    # A spec change rolls the Deployment (new template), and status follows the new generation.
    k.patch("Speculator", "llama", {"spec": {"vllm": {"extraArgs": ["--enable-prefix-caching"]}}})
    dep = k.wait(
        lambda: k.get("Deployment", "llama-vllm"),
        lambda d: "--enable-prefix-caching" in d["spec"]["template"]["spec"]["containers"][0]["args"],
        what="rolled Deployment",
    )
    assert dep["metadata"]["generation"] >= 2
    k.wait_status(
        "Speculator",
        "llama",
        lambda s: s.get("observedGeneration") == 3 and s.get("phase") == "Running",
        "generation 3 reconciled",
    )


def test_training_ref_waits_then_deploys(operator: OperatorProcess, k: Kube) -> None:
    k.create(speculator_body("served", draft={"trainingRef": {"name": "later"}}, numSpeculativeTokens=4))
    status = k.wait_phase("Speculator", "served", "WaitingForTraining")
    assert cond(status, "TrainingReady")["reason"] == "TrainingNotFound"
    assert cond(status, "TrainingReady")["status"] == "Unknown"  # waiting is not an error
    k.create(training_body("later", training={"mode": "online"}))
    k.wait_status(
        "Speculator",
        "served",
        lambda s: cond(s, "TrainingReady")["reason"] == "TrainingInProgress",
        "training in progress",
    )
    assert k.get("Deployment", "served-vllm") is None
    for step, summary in (("prepare", PREPARE), ("train", TRAIN), ("eval", EVAL)):
        k.release_pods(f"job-name=later-{step}", message=json.dumps(summary))
    k.wait_phase("SpeculatorTraining", "later", "Succeeded")
    status = k.wait_phase("Speculator", "served", "Running")
    assert status["draft"] == {
        "uri": "pvc://later-workspace/later/model",
        "method": "eagle3",
        "numSpeculativeTokens": 4,
    }
    pod = k.get("Deployment", "served-vllm")["spec"]["template"]["spec"]
    config = json.loads(pod["containers"][0]["args"][3])
    assert config == {
        "model": "/mnt/pvc/later-workspace/later/model",
        "method": "eagle3",
        "num_speculative_tokens": 4,
    }
    assert {
        "name": "pvc-later-workspace",
        "persistentVolumeClaim": {"claimName": "later-workspace", "readOnly": True},
    } in pod["volumes"]


def test_drift_of_children_is_undone(operator: OperatorProcess, k: Kube) -> None:
    """Edits by others to what the operator owns come back: a changed spec field (generation moves), a
    removed label (only metadata moves), a deleted Service. The operator reads its children from its
    watch cache, so this is also the cache seeing every change."""
    inspect = json.dumps(INSPECT)
    k.create(
        speculator_body(
            "drift", podMetadata={"annotations": {"sim.speculators.ai/termination-message": inspect}}
        )
    )
    k.wait_phase("Speculator", "drift", "Running")
    dep = k.get("Deployment", "drift-vllm")
    assert dep["spec"]["replicas"] == 1

    k.patch("Deployment", "drift-vllm", {"spec": {"replicas": 3}})
    k.wait(
        lambda: k.get("Deployment", "drift-vllm"), lambda d: d["spec"]["replicas"] == 1, what="replicas back"
    )

    label = "app.kubernetes.io/part-of"
    assert label in dep["metadata"]["labels"]
    k.patch("Deployment", "drift-vllm", {"metadata": {"labels": {label: None}}})
    restored = k.wait(
        lambda: k.get("Deployment", "drift-vllm"),
        lambda d: d["metadata"]["labels"].get(label) == dep["metadata"]["labels"][label],
        what="label back",
    )
    assert restored["metadata"]["generation"] == k.get("Deployment", "drift-vllm")["metadata"]["generation"]

    uid = k.get("Service", "drift")["metadata"]["uid"]
    k.delete("Service", "drift")
    k.wait(
        lambda: k.get("Service", "drift"),
        lambda s: s is not None and s["metadata"]["uid"] != uid,
        what="Service recreated",
    )
    assert k.get("Speculator", "drift")["status"]["phase"] == "Running"


def _running_pod(k: Kube, name: str) -> dict[str, Any]:
    pods = k.wait(
        lambda: [
            p
            for p in k.pods(f"speculators.ai/speculator={name}")
            if p["status"].get("podIP") and p["status"].get("phase") == "Running"
        ],
        what="a running vLLM pod with an IP",
    )
    return pods[0]


def test_acceptance_from_vllm_metrics_with_a_counter_reset(operator: OperatorProcess, k: Kube) -> None:
    port = free_port()
    k.create(
        speculator_body(
            "live",
            method="eagle3",
            numSpeculativeTokens=3,
            vllm={"port": port},
            metrics={"intervalSeconds": 2, "windowSeconds": 600},
        )
    )
    pod = _running_pod(k, "live")
    with VllmStandIn(pod["status"]["podIP"], port, FIXTURE).running() as vllm:
        # The pod started inside the window, so its counters count from the first scrape.
        status = k.wait_status(
            "Speculator",
            "live",
            lambda s: (s.get("acceptance") or {}).get("drafts") == 1000,
            "acceptance from the first scrape",
        )
        acc = status["acceptance"]
        assert acc["acceptanceRate"] == 0.596 and acc["meanAcceptanceLength"] == 2.788
        assert acc["perPosition"] == [0.796, 0.579, 0.413]
        assert (acc["draftTokens"], acc["acceptedTokens"], acc["pods"], acc["source"]) == (
            3000,
            1788,
            1,
            "pods",
        )
        assert acc["windowSeconds"] == 600 and acc["lastScrapeTime"]
        assert cond(status, "MetricsAvailable")["status"] == "True"
        assert cond(status, "Ready")["status"] == "True"

        # No new traffic: later scrapes change nothing, so the object is not rewritten.
        version = k.get("Speculator", "live")["metadata"]["resourceVersion"]
        seen = vllm.scrapes
        k.wait(lambda: vllm.scrapes, lambda n: n >= seen + 3, what="three more scrapes", timeout=30)
        assert k.get("Speculator", "live")["metadata"]["resourceVersion"] == version

        # Traffic grows to 3x the fixture.
        vllm.text = scaled_fixture(3)
        k.wait_status("Speculator", "live", lambda s: s["acceptance"]["drafts"] == 3000, "3000 drafts")
        # vLLM restarts: counters begin again from zero (lower than before) with new *_created stamps.
        vllm.text = scaled_fixture(0.5, created=1.9e9)
        status = k.wait_status(
            "Speculator", "live", lambda s: s["acceptance"]["drafts"] == 3500, "reset counted"
        )
        acc = status["acceptance"]
        assert (
            acc["acceptanceRate"] == 0.596 and acc["meanAcceptanceLength"] == 2.788
        )  # not negative, not inflated
        assert all(0 <= r <= 1 for r in acc["perPosition"])

    metrics = operator.metrics()
    assert f'speculators_acceptance_rate{{namespace="{k.ns}",speculator="live"}} 0.596' in metrics
    assert f'speculators_mean_acceptance_length{{namespace="{k.ns}",speculator="live"}} 2.788' in metrics
    assert 'speculators_operator_reconciles_total{kind="Speculator"}' in metrics
    # The stand-in is gone: scrapes fail, the last acceptance stays, the condition says why.
    status = k.wait_status(
        "Speculator",
        "live",
        lambda s: cond(s, "MetricsAvailable")["reason"] == "ScrapeFailed",
        "scrape failure reported",
    )
    assert status["acceptance"]["drafts"] == 3500 and cond(status, "Ready")["status"] == "True"
