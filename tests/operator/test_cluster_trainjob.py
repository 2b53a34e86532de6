"""training.runtime trainjob against the real control plane with Kubeflow Trainer v2.3.0's real CRDs: the
train step is a TrainJob on the chart's ClusterTrainingRuntime, its pods run the same command line, and
its result folds into the training's status as a Job's does; a failed TrainJob fails the step with its
reason, and the retry annotation replaces it.

Stand-in, for what cannot run here: Trainer's controller (hack/localrun/trainer_standin.py: the runtime
with the TrainJob's patches and trainer fields as one Indexed Job, torchrun's PET_* env, the TrainJob's
status). The real Job controller and kwok run its pods; the test releases them with the summaries the
real `speculators train` prints.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Kube, OperatorProcess
from localrun.trainer_standin import TrainerStandIn
from spd_testlib import EVAL, PREPARE, TRAIN, cond, training_body
from standin_fleet import in_background

from speculators_operator.render.common import Images
from speculators_operator.render.trainjob import cluster_training_runtime

pytestmark = pytest.mark.kwok

API = "trainer.kubeflow.org/v1alpha1"
JOBSET = "jobset.sigs.k8s.io/jobset-name"


# Cluster-scoped: a name of the test's own (speculators-torchrun is the chart tests'), removed after.
RUNTIME = "speculators-torchrun-test"


@pytest.fixture
def trainer(third_party_crds: list[str], kube_api: Any, k: Kube) -> Any:
    runtime = cluster_training_runtime(RUNTIME, Images().runtime, "IfNotPresent")
    kube_api.apply(runtime, force=True)
    standin = TrainerStandIn(kube_api, k.ns)
    try:
        with in_background(standin.run):
            yield standin
    finally:
        kube_api.delete(API, "ClusterTrainingRuntime", RUNTIME)


def _trainjob(kube_api: Any, k: Kube, name: str) -> dict[str, Any]:
    return k.wait(lambda: _get(kube_api, k, name), what=f"TrainJob {name}")


def _get(kube_api: Any, k: Kube, name: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return kube_api.get(API, "TrainJob", name, k.ns)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_the_train_step_runs_as_a_trainjob_and_folds_back(
    trainer: Any, operator: OperatorProcess, k: Kube, kube_api: Any
) -> None:
    training = {"mode": "online", "runtime": "trainjob", "nodes": 2, "trainingRuntime": RUNTIME}
    k.create(training_body("tj", training=training))
    k.release_pods("job-name=tj-prepare", message=json.dumps(PREPARE))

    trainjob = _trainjob(kube_api, k, "tj-train")
    assert trainjob["spec"]["runtimeRef"]["name"] == RUNTIME
    (patch,) = trainjob["spec"]["runtimePatches"]  # kept whole by Trainer's CRD: nothing pruned
    assert patch["manager"] == "speculators.ai/operator"
    assert k.get("Service", "tj-train") is None  # Trainer's JobSet brings its own headless Service
    status = k.wait_phase("SpeculatorTraining", "tj", "Training")
    assert status["steps"][-1]["name"] == "train"

    pods = k.wait(lambda: k.pods(f"{JOBSET}=tj-train"), lambda ps: len(ps) == 2, what="2 pods")
    (node,) = pods[0]["spec"]["containers"]
    assert node["command"] == ["torchrun"] and node["args"][:3] == ["-m", "speculators_core.cli", "train"]
    env = {e["name"] for e in node["env"]}
    assert {"PET_NNODES", "PET_NODE_RANK", "PET_MASTER_ADDR"} <= env and "MASTER_ADDR" not in env
    assert {m["mountPath"] for m in node["volumeMounts"]} >= {"/workspace"}
    assert pods[0]["metadata"]["labels"]["speculators.ai/training"] == "tj"

    k.release_pods(f"{JOBSET}=tj-train", message=json.dumps(TRAIN), count=2)
    k.wait(lambda: k.get("Job", "tj-eval"), what="the eval Job after the TrainJob completed")
    status = k.wait_phase("SpeculatorTraining", "tj", "Evaluating")
    assert status["metrics"]["loss"] == 2.5  # the trainer's summary, read from the TrainJob's pods
    k.release_pods("job-name=tj-eval", message=json.dumps(EVAL))
    status = k.wait_phase("SpeculatorTraining", "tj", "Succeeded")
    assert [s["state"] for s in status["steps"]] == ["Succeeded"] * 3
    assert not trainer.errors, trainer.errors


def test_a_failed_trainjob_fails_the_step_and_the_retry_annotation_replaces_it(
    trainer: Any, operator: OperatorProcess, k: Kube, kube_api: Any
) -> None:
    k.create(
        training_body("tjf", training={"mode": "online", "runtime": "trainjob", "trainingRuntime": RUNTIME})
    )
    k.release_pods("job-name=tjf-prepare", message=json.dumps(PREPARE))
    first = _trainjob(kube_api, k, "tjf-train")
    k.release_pods(f"{JOBSET}=tjf-train", outcome="fail", exit_code=2, message="bad data")
    status = k.wait_phase("SpeculatorTraining", "tjf", "Failed")
    ready = cond(status, "Ready")
    assert ready["status"] == "False" and "bad data" in ready["message"]

    k.patch("SpeculatorTraining", "tjf", {"metadata": {"annotations": {"speculators.ai/retry": "1"}}})
    second = k.wait(
        lambda: _get(kube_api, k, "tjf-train"),
        lambda tj: tj is not None and tj["metadata"]["uid"] != first["metadata"]["uid"],
        what="a new TrainJob",
    )
    assert second["metadata"]["annotations"]["speculators.ai/step"] == "train"
    k.release_pods(f"{JOBSET}=tjf-train", message=json.dumps(TRAIN))
    k.wait(lambda: k.get("Job", "tjf-eval"), what="eval after the retried TrainJob")
    assert k.get("SpeculatorTraining", "tjf")["metadata"]["generation"] == 1  # spec never written
