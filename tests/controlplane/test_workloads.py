"""Jobs and Deployments through the real kube-controller-manager and kube-scheduler, on kwok GPU nodes.
Pod outcomes come from the sim.speculators.ai annotations (kwok stages), so these need the simulated
nodes: on a real cluster the pods would really run (and fail to pull the stand-in image)."""

from __future__ import annotations

from typing import Any

import pytest

from harness import KubeApi, deployment, job, pod, restricted_container, wait_for

pytestmark = pytest.mark.kwok
Obj = dict[str, Any]


def condition(obj: Obj, type_: str) -> Obj | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None)


def has_condition(obj: Obj, type_: str, status: str = "True") -> bool:
    c = condition(obj, type_)
    return c is not None and c["status"] == status


def finished_job(kube_api: KubeApi, namespace: str, name: str, timeout: float = 30) -> Obj:
    return wait_for(
        lambda: kube_api.get("batch/v1", "Job", name, namespace),
        lambda j: has_condition(j, "Complete") or has_condition(j, "Failed"),
        timeout=timeout,
        what=f"Job {name} to finish",
    )


def job_pods(kube_api: KubeApi, namespace: str, name: str) -> list[Obj]:
    return kube_api.list("v1", "Pod", namespace, selector=f"job-name={name}")


def terminated(p: Obj) -> Obj:
    return p["status"]["containerStatuses"][0]["state"]["terminated"]


def test_job_without_markers_succeeds(kube_api: KubeApi, namespace: str) -> None:
    kube_api.create(job("plain", initContainers=[restricted_container("fetch")]), namespace)

    j = finished_job(kube_api, namespace, "plain")
    assert has_condition(j, "Complete"), j["status"]
    assert j["status"]["succeeded"] == 1
    [p] = job_pods(kube_api, namespace, "plain")
    assert p["status"]["phase"] == "Succeeded"
    assert p["spec"]["nodeName"].startswith("kwok-gpu-")
    assert terminated(p)["exitCode"] == 0 and terminated(p)["reason"] == "Completed"
    [init] = p["status"]["initContainerStatuses"]
    assert (
        init["state"]["terminated"]["exitCode"] == 0 and init["state"]["terminated"]["reason"] == "Completed"
    )


def test_succeeded_job_pod_carries_termination_message(kube_api: KubeApi, namespace: str) -> None:
    summary = '{"algorithm": "eagle3", "speculative_tokens": 3}'
    kube_api.create(
        job("resolve", annotations={"sim.speculators.ai/termination-message": summary}), namespace
    )

    assert has_condition(finished_job(kube_api, namespace, "resolve"), "Complete")
    [p] = job_pods(kube_api, namespace, "resolve")
    assert terminated(p)["message"] == summary


def test_job_fails_with_exit_code_and_message_from_annotations(kube_api: KubeApi, namespace: str) -> None:
    # The operator's policy: exit codes 2 and 3 are permanent, so the Job fails without retrying.
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2, 3]}}]}
    marks = {
        "sim.speculators.ai/outcome": "fail",
        "sim.speculators.ai/exit-code": "2",
        "sim.speculators.ai/termination-message": '{"error": "unknown dataset split"}',
    }
    kube_api.create(job("invalid", annotations=marks, backoff_limit=3, pod_failure_policy=policy), namespace)

    j = finished_job(kube_api, namespace, "invalid")
    failed = condition(j, "Failed")
    assert failed and failed["status"] == "True", j["status"]
    assert failed["reason"] == "PodFailurePolicy"
    assert "failed with exit code 2 matching FailJob rule" in failed["message"]
    assert j["status"]["failed"] == 1, "no retry: the Job controller read the exit code"
    [p] = job_pods(kube_api, namespace, "invalid")
    assert p["status"]["phase"] == "Failed"
    assert terminated(p)["exitCode"] == 2
    assert terminated(p)["message"] == '{"error": "unknown dataset split"}'


@pytest.mark.slow  # the Job controller waits ~10s before the retry
def test_failing_job_is_retried_until_backoff_limit(kube_api: KubeApi, namespace: str) -> None:
    kube_api.create(
        job("flaky", annotations={"sim.speculators.ai/outcome": "fail"}, backoff_limit=1), namespace
    )

    j = finished_job(kube_api, namespace, "flaky", timeout=60)
    failed = condition(j, "Failed")
    assert failed and failed["reason"] == "BackoffLimitExceeded", j["status"]
    assert j["status"]["failed"] == 2
    pods = job_pods(kube_api, namespace, "flaky")
    assert [terminated(p)["exitCode"] for p in pods] == [1, 1], "default exit code of a failed pod"


def test_held_job_pod_stays_running_until_released(kube_api: KubeApi, namespace: str) -> None:
    kube_api.create(job("held", annotations={"sim.speculators.ai/hold": "true"}), namespace)
    [held] = wait_for(
        lambda: job_pods(kube_api, namespace, "held"),
        lambda ps: len(ps) == 1 and ps[0]["status"].get("phase") == "Running",
        what="the held pod to run",
    )
    # A second Job finishing after the held pod ran shows kwok has been processing pods meanwhile; the
    # held one must still be running (a clock made of events, not of sleeping).
    kube_api.create(job("clock"), namespace)
    assert has_condition(finished_job(kube_api, namespace, "clock"), "Complete")
    j = kube_api.get("batch/v1", "Job", "held", namespace)
    assert j["status"].get("active") == 1 and not j["status"].get("succeeded"), j["status"]
    assert kube_api.get("v1", "Pod", held["metadata"]["name"], namespace)["status"]["phase"] == "Running"

    kube_api.patch(
        "v1",
        "Pod",
        held["metadata"]["name"],
        {"metadata": {"annotations": {"sim.speculators.ai/hold": "false"}}},
        namespace,
    )
    assert has_condition(finished_job(kube_api, namespace, "held"), "Complete")


def test_deployment_becomes_available_on_kwok_gpu_nodes(kube_api: KubeApi, namespace: str) -> None:
    kube_api.create(
        deployment(
            "vllm",
            replicas=2,
            containers=[restricted_container(gpus=1)],
            initContainers=[restricted_container("fetch")],
        ),
        namespace,
    )

    d = wait_for(
        lambda: kube_api.get("apps/v1", "Deployment", "vllm", namespace),
        lambda d: has_condition(d, "Available") and d["status"].get("readyReplicas") == 2,
        what="Deployment vllm to be Available with 2 ready replicas",
    )
    assert d["status"]["availableReplicas"] == 2
    pods = kube_api.list("v1", "Pod", namespace, selector="app=vllm")
    assert len(pods) == 2
    for p in pods:
        node = kube_api.get("v1", "Node", p["spec"]["nodeName"])
        assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert has_condition(p, "Ready")
        [init] = p["status"]["initContainerStatuses"]
        assert init["state"]["terminated"]["reason"] == "Completed"


def test_gpu_requests_schedule_and_too_large_requests_stay_pending(kube_api: KubeApi, namespace: str) -> None:
    kube_api.create(pod("whole-node", containers=[restricted_container(gpus=8)]), namespace)
    kube_api.create(pod("too-big", containers=[restricted_container(gpus=9)]), namespace)

    # Generous: GPUs of earlier tests' pods are freed as their namespaces are deleted.
    running = wait_for(
        lambda: kube_api.get("v1", "Pod", "whole-node", namespace),
        lambda p: p["status"].get("phase") == "Running",
        timeout=90,
        what="the 8-GPU pod to run",
    )
    assert running["spec"]["nodeName"].startswith("kwok-gpu-")

    pending = wait_for(
        lambda: kube_api.get("v1", "Pod", "too-big", namespace),
        lambda p: has_condition(p, "PodScheduled", "False"),
        what="the scheduler to reject the 9-GPU pod",
    )
    scheduled = condition(pending, "PodScheduled")
    assert scheduled is not None
    assert scheduled["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in scheduled["message"]
    assert pending["status"]["phase"] == "Pending" and not pending["spec"].get("nodeName")


def test_unready_marker_keeps_deployment_unavailable_until_cleared(kube_api: KubeApi, namespace: str) -> None:
    kube_api.create(deployment("loading", annotations={"sim.speculators.ai/ready": "false"}), namespace)
    [p] = wait_for(
        lambda: kube_api.list("v1", "Pod", namespace, selector="app=loading"),
        lambda ps: len(ps) == 1 and ps[0]["status"].get("phase") == "Running",
        what="the pod to run",
    )
    assert has_condition(p, "Ready", "False")
    d = kube_api.get("apps/v1", "Deployment", "loading", namespace)
    assert not d["status"].get("readyReplicas") and has_condition(d, "Available", "False"), d["status"]

    # Patch the pod, not the template (that would roll out a new ReplicaSet).
    kube_api.patch(
        "v1",
        "Pod",
        p["metadata"]["name"],
        {"metadata": {"annotations": {"sim.speculators.ai/ready": None}}},
        namespace,
    )
    wait_for(
        lambda: kube_api.get("apps/v1", "Deployment", "loading", namespace),
        lambda d: has_condition(d, "Available") and d["status"].get("readyReplicas") == 1,
        what="Deployment loading to become Available",
    )


def test_indexed_job_pods_get_their_outcomes_one_by_one(kube_api: KubeApi, namespace: str) -> None:
    # Hold every index, then decide each pod's fate by patching it: how a test fails one datagen shard.
    shards = job("datagen", annotations={"sim.speculators.ai/hold": "true"})
    shards["spec"].update(completionMode="Indexed", completions=2, parallelism=2, backoffLimitPerIndex=0)
    shards["spec"].pop("backoffLimit")
    kube_api.create(shards, namespace)
    pods = wait_for(
        lambda: job_pods(kube_api, namespace, "datagen"),
        lambda ps: len(ps) == 2 and all(p["status"].get("phase") == "Running" for p in ps),
        what="both shards to run",
    )
    by_index = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p for p in pods}

    release = {"sim.speculators.ai/hold": "false"}
    fail = {**release, "sim.speculators.ai/outcome": "fail", "sim.speculators.ai/exit-code": "75"}
    for index, marks in (("0", release), ("1", fail)):
        name = by_index[index]["metadata"]["name"]
        kube_api.patch("v1", "Pod", name, {"metadata": {"annotations": marks}}, namespace)

    j = finished_job(kube_api, namespace, "datagen")
    failed = condition(j, "Failed")
    assert failed and failed["reason"] == "FailedIndexes", j["status"]
    assert j["status"]["completedIndexes"] == "0"
    assert j["status"]["failedIndexes"] == "1"
