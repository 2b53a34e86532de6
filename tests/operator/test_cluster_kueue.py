"""spec.scheduling.queueName against a real Kueue: its controller manager built from sigs.k8s.io/kueue (the
version hack/build-control-plane.sh pins) with its own CRDs from the same module, on the embedded
control plane with the real Job controller and kwok nodes.

A ClusterQueue whose GPU quota fits one training step admits the first training's GPU step and queues the
second's: that training reads `Queued`, with the reason Kueue's Workload gives, instead of Pending. When
the first step ends, Kueue admits the queued one (StrictFIFO: the oldest waiting Workload first).

Not real here: Kueue's webhooks are registered but never called (hack/kubecluster/kueue.py says why);
the operator creates its Jobs suspended, which is what Kueue's job webhook would enforce.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Kube, OperatorProcess
from spd_testlib import EVAL, PREPARE, TRAIN, training_body

from kubecluster import wait_for
from kubecluster.kueue import KueueController

pytestmark = pytest.mark.kwok

KUEUE = "kueue.x-k8s.io/v1beta2"
FLAVOR, CLUSTER_QUEUE, QUEUE = "spd-test-default", "spd-test-gpus", "gpu"


@pytest.fixture(scope="module")
def kueue(cluster: Any, kube_api: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KueueController]:
    controller = KueueController(kube_api.api, cluster.kubeconfig, tmp_path_factory.mktemp("kueue"))
    controller.install()
    try:
        controller.start()
        yield controller
        # Kueue's finalizers hold its objects (and so the tests' namespaces) until it has let them go.
        wait_for(
            lambda: kube_api.request("GET", f"/apis/{KUEUE}/workloads")["items"],
            lambda ws: not ws,
            timeout=90,
            what="no Workloads left",
        )
    finally:
        controller.stop()
        # Its webhook configurations and Secret go; its CRDs stay for the session, like every CRD the tests
        # install: an operator starting while a CRD it watches is being deleted sees Kopf's watcher fail
        # with 404 and exits (CI showed it). No object of them is left, and only v1beta2 is ever read.
        for obj in reversed(controller.installed):
            if obj["kind"] not in ("Namespace", "CustomResourceDefinition"):
                kube_api.delete(
                    obj["apiVersion"], obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace")
                )


@pytest.fixture
def gpu_queue(kueue: KueueController, kube_api: Any, namespace: str) -> Iterator[str]:
    """One GPU for the test's namespace: a ResourceFlavor, a StrictFIFO ClusterQueue, a LocalQueue."""
    quota = [
        {"name": "cpu", "nominalQuota": "64"},
        {"name": "memory", "nominalQuota": "1Ti"},
        {"name": "nvidia.com/gpu", "nominalQuota": "1"},
    ]
    objs = [
        {"apiVersion": KUEUE, "kind": "ResourceFlavor", "metadata": {"name": FLAVOR}},
        {
            "apiVersion": KUEUE,
            "kind": "ClusterQueue",
            "metadata": {"name": CLUSTER_QUEUE},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "queueingStrategy": "StrictFIFO",
                "resourceGroups": [
                    {
                        "coveredResources": [q["name"] for q in quota],
                        "flavors": [{"name": FLAVOR, "resources": quota}],
                    }
                ],
            },
        },
        {
            "apiVersion": KUEUE,
            "kind": "LocalQueue",
            "metadata": {"name": QUEUE, "namespace": namespace},
            "spec": {"clusterQueue": CLUSTER_QUEUE},
        },
    ]
    for obj in objs:
        kube_api.apply(obj, force=True)
    try:
        yield QUEUE
    finally:
        for obj in reversed(objs):
            kube_api.delete(
                obj["apiVersion"], obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace")
            )
        for obj in objs[:2]:  # cluster-scoped: gone once Kueue released them
            wait_for(
                lambda o=obj: kube_api.list(KUEUE, o["kind"]),
                lambda items, o=obj: all(i["metadata"]["name"] != o["metadata"]["name"] for i in items),
                timeout=60,
                what=f"{obj['kind']} {obj['metadata']['name']} deleted",
            )


def _trainings(k: Kube, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    return {n: (k.get("SpeculatorTraining", n) or {}).get("status") or {} for n in names}


def _step(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next((s for s in status.get("steps") or [] if s["name"] == name), {})


def test_kueue_admits_one_gpu_step_queues_the_other_and_hands_over(
    gpu_queue: str, operator: OperatorProcess, k: Kube, kueue: KueueController, kube_api: Any
) -> None:
    names = ("first", "second")
    for name in names:
        spec = {"training": {"mode": "online"}, "scheduling": {"queueName": gpu_queue}}
        k.create(training_body(name, **spec))
    # prepare needs no GPU: Kueue admits both (the Job controller runs their pods once unsuspended).
    for name in names:
        k.release_pods(f"job-name={name}-prepare", message=json.dumps(PREPARE))

    # Both train steps want the one GPU: one runs, the other is Queued with Kueue's own reason (its
    # scheduler writes it on the Workload a moment after the Job is created; the Workload's event wakes
    # the training).
    def one_runs_one_queued(st: dict[str, dict[str, Any]]) -> bool:
        queued = [s for s in st.values() if s.get("phase") == "Queued"]
        # "insufficient unused quota", not a passing "quota reserved, waiting for admission checks" of a
        # workload that Kueue is admitting right now.
        return sorted(s.get("phase") for s in st.values()) == ["Queued", "Training"] and (
            "insufficient unused quota" in _step(queued[0], "train").get("message", "")
        )

    st = k.wait(
        lambda: _trainings(k, names), one_runs_one_queued, what="one Training, one Queued", timeout=90
    )
    running = next(n for n in names if st[n]["phase"] == "Training")
    waiting = next(n for n in names if n != running)
    workload = next(
        w
        for w in kube_api.list(KUEUE, "Workload", k.ns)
        if w["metadata"]["ownerReferences"][0]["name"] == f"{waiting}-train"
    )
    step = _step(st[waiting], "train")
    assert step["state"] == "Queued"
    assert step["message"].startswith(f"LocalQueue {gpu_queue}: Pending: "), workload.get("status")
    assert "insufficient unused quota for nvidia.com/gpu" in step["message"], step["message"]
    trained = next(c for c in st[waiting]["conditions"] if c["type"] == "Trained")
    assert (trained["status"], trained["reason"]) == ("Unknown", "Queued")
    assert k.get("Job", f"{waiting}-train")["spec"]["suspend"] is True
    assert k.get("Job", f"{running}-train")["spec"]["suspend"] is False
    reserved = next(c for c in workload["status"]["conditions"] if c["type"] == "QuotaReserved")
    assert reserved["status"] == "False" and reserved["message"] in step["message"]

    # The running step ends: Kueue admits the queued train step, older than the first one's eval Job.
    k.release_pods(f"job-name={running}-train", message=json.dumps(TRAIN))
    st = k.wait(
        lambda: _trainings(k, names),
        lambda st: st[waiting].get("phase") == "Training" and st[running].get("phase") == "Queued",
        what=f"{waiting} admitted, {running}'s eval queued",
        timeout=90,
    )
    assert _step(st[running], "eval")["state"] == "Queued"
    assert _step(st[running], "train")["state"] == "Succeeded"

    k.release_pods(f"job-name={waiting}-train", message=json.dumps(TRAIN))
    k.release_pods(f"job-name={running}-eval", message=json.dumps(EVAL))
    k.release_pods(f"job-name={waiting}-eval", message=json.dumps(EVAL))
    for name in names:
        status = k.wait_phase("SpeculatorTraining", name, "Succeeded", timeout=90)
        assert [s["state"] for s in status["steps"]] == ["Succeeded"] * 3
