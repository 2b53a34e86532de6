"""spec.scheduling.queueName, observed (pure): a step Kueue holds back reads Queued with the Workload's own
reason instead of Pending; admitted, it runs as before; gated serving pods read Queued too."""

from __future__ import annotations

import copy
from typing import Any

from spd_testlib import NOW, as_observed_job, speculator, training

from speculators_operator.handlers.registry import Registry
from speculators_operator.render.training import TrainingContext, step_hashes, step_job
from speculators_operator.status.conditions import find
from speculators_operator.status.jobs import observe_job
from speculators_operator.status.queue import gated_pods, workloads_by_owner
from speculators_operator.status.speculator import SpeculatorObserved, derive_speculator
from speculators_operator.status.training import TrainingObserved, derive_training

NO_QUOTA = (
    "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor "
    "gpu, 1 more needed"
)


def _workload(job: dict[str, Any], reserved: str | None, message: str = "", created: str = NOW) -> dict:
    meta = job["metadata"]
    conds = []
    if reserved is not None:
        reason = "Pending" if reserved == "False" else "QuotaReserved"
        conds.append({"type": "QuotaReserved", "status": reserved, "reason": reason, "message": message})
    return {
        "metadata": {
            "name": f"job-{meta['name']}-1a2b3",
            "creationTimestamp": created,
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "status": {"conditions": conds},
    }


def _prepare_job(body: dict[str, Any], suspended: bool) -> dict[str, Any]:
    ctx = TrainingContext.of(body)
    job = as_observed_job(step_job(ctx, "prepare", step_hashes(ctx)["prepare"]), "Pending")
    job["spec"]["suspend"] = suspended
    return job


def test_a_step_kueue_holds_back_is_queued_with_the_workloads_reason() -> None:
    body = training(scheduling={"queueName": "gpu-team"})
    job = _prepare_job(body, suspended=True)
    observed = TrainingObserved(
        jobs={"prepare": job}, queue={"llama-prepare": _workload(job, "False", NO_QUOTA)}
    )
    st = derive_training(body, observed, now=NOW).status
    assert st["phase"] == "Queued"
    assert st["steps"][0]["state"] == "Queued"
    prepared = find(st["conditions"], "DataPrepared")
    assert (prepared["status"], prepared["reason"]) == ("Unknown", "Queued")
    assert prepared["message"] == f"LocalQueue gpu-team: Pending: {NO_QUOTA}"
    assert find(st["conditions"], "Ready")["reason"] == "Queued"

    # Admitted: Kueue unsuspends the Job, and the step is an ordinary one again.
    job = _prepare_job(body, suspended=False)
    st = derive_training(body, TrainingObserved(jobs={"prepare": job}), now=NOW).status
    assert st["phase"] == "Pending" and st["steps"][0]["state"] == "Pending"


def test_without_a_workload_yet_the_queue_is_still_named() -> None:
    body = training(scheduling={"queueName": "gpu-team"})
    obs = observe_job(_prepare_job(body, suspended=True), [])
    assert obs.state == "Queued"
    assert obs.pending_reason.startswith("waiting for Kueue to admit it through LocalQueue gpu-team")
    # A Workload of an earlier Job of the same name (another uid) does not speak for this one.
    job = _prepare_job(body, suspended=True)
    old = _workload({"metadata": {"name": "llama-prepare", "uid": "old"}}, "False", NO_QUOTA)
    assert "no Kueue Workload" in observe_job(job, [], old).pending_reason


def test_a_queue_on_a_cluster_without_kueue_says_so() -> None:
    body = training(scheduling={"queueName": "gpu-team"})
    observed = TrainingObserved(jobs={"prepare": _prepare_job(body, suspended=True)}, kueue_installed=False)
    prepared = find(derive_training(body, observed, now=NOW).status["conditions"], "DataPrepared")
    assert prepared["reason"] == "Queued"
    assert "serves no workloads.kueue.x-k8s.io" in prepared["message"]
    assert "remove spec.scheduling.queueName" in prepared["message"]


def test_a_suspended_job_without_a_queue_is_not_queued() -> None:
    job = _prepare_job(training(), suspended=True)
    assert observe_job(job, [], None).state == "Pending"


def test_workloads_are_matched_to_their_controlling_job_newest_first() -> None:
    job = {"metadata": {"name": "llama-train", "uid": "u2"}}
    old = _workload(
        {"metadata": {"name": "llama-train", "uid": "u1"}}, "False", created="2026-01-01T00:00:00Z"
    )
    new = _workload(job, "True", created="2026-01-02T00:00:00Z")
    other = copy.deepcopy(new)
    other["metadata"]["ownerReferences"][0]["controller"] = False
    other["metadata"]["ownerReferences"][0]["name"] = "not-controlled"
    by_owner = workloads_by_owner([new, old, other])
    assert by_owner == {"llama-train": new}
    assert (
        observe_job({**_prepare_job(training(scheduling={"queueName": "q"}), True)}, [], None).state
        == "Queued"
    )


def test_workload_events_wake_the_training_of_the_step_job() -> None:
    registry = Registry()
    registry.upsert("SpeculatorTraining", {"metadata": {"namespace": "ns", "name": "llama-r2"}})
    assert registry.training_of_job("ns", "llama-r2-datagen") == "llama-r2"
    assert registry.training_of_job("ns", "llama-r2-vllm") is None
    assert registry.training_of_job("other", "llama-r2-train") is None


def test_serving_pods_behind_kueues_admission_gate_read_queued() -> None:
    body = speculator(method="eagle3", numSpeculativeTokens=3, scheduling={"queueName": "serving"})
    dep = {
        "metadata": {
            "name": "llama-spd-vllm",
            "generation": 1,
            "annotations": {"speculators.ai/draft": body["spec"]["draft"]["uri"]},
        },
        "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 0, "updatedReplicas": 1},
    }
    pod = {
        "metadata": {"name": "llama-spd-vllm-abc"},
        "spec": {"schedulingGates": [{"name": "kueue.x-k8s.io/admission"}]},
    }
    assert gated_pods([pod, {"metadata": {"name": "free"}, "spec": {}}]) == ["llama-spd-vllm-abc"]
    plan = derive_speculator(body, SpeculatorObserved(deployment=dep, service={}, pods=[pod]), now=NOW)
    cond = find(plan.status["conditions"], "DeploymentReady")
    assert (cond["status"], cond["reason"]) == ("Unknown", "Queued")
    assert "LocalQueue serving" in cond["message"] and "llama-spd-vllm-abc" in cond["message"]
    pod["spec"]["schedulingGates"] = []  # admitted
    plan = derive_speculator(body, SpeculatorObserved(deployment=dep, service={}, pods=[pod]), now=NOW)
    assert find(plan.status["conditions"], "DeploymentReady")["reason"] == "Progressing"
