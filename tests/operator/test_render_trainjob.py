"""training.runtime trainjob and scheduling.queueName, rendered (no cluster): the TrainJob Trainer v2.3 takes,
and the Kueue label on every workload."""

from __future__ import annotations

from spd_testlib import speculator, training

from speculators_operator.api.common import ModelSource
from speculators_operator.render.common import Images
from speculators_operator.render.speculator import ResolvedDraft, SpeculatorContext, deployment
from speculators_operator.render.training import (
    TrainingContext,
    step_hashes,
    step_job,
    steps_for,
    train_service,
)

IMAGES = Images(runtime="registry.example/runtime:1", vllm="registry.example/vllm:1")
QUEUE = "kueue.x-k8s.io/queue-name"


def _ctx(**spec: object) -> TrainingContext:
    return TrainingContext.of(training("llama", **spec), IMAGES)


def test_the_train_step_is_a_trainjob_with_the_same_command_line() -> None:
    ctx = _ctx(training={"runtime": "trainjob", "nodes": 2, "gpusPerNode": 4})
    tj = step_job(ctx, "train", step_hashes(ctx)["train"])
    job_ctx = _ctx(training={"nodes": 2, "gpusPerNode": 4})
    job = step_job(job_ctx, "train", step_hashes(job_ctx)["train"])
    assert (tj["apiVersion"], tj["kind"], tj["metadata"]["name"]) == (
        "trainer.kubeflow.org/v1alpha1",
        "TrainJob",
        "llama-train",
    )
    assert tj["metadata"]["annotations"]["speculators.ai/step"] == "train"
    assert tj["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
        "name": "speculators-torchrun",
    }
    trainer = tj["spec"]["trainer"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    # The Job's torchrun line less its rendezvous flags: Trainer's PET_* env says the same to torchrun.
    flags = [a for a in container["args"] if a.startswith("--") and "=$(" in a]
    assert trainer["command"] == ["torchrun"] and trainer["args"] == [
        a for a in container["args"] if a not in flags
    ]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)
    assert trainer["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": 4}}  # Trainer counts GPUs from it
    assert not {"MASTER_ADDR", "NNODES", "NODE_RANK"} & {e["name"] for e in trainer["env"]}
    assert trainer["image"] == "registry.example/runtime:1"
    (patch,) = tj["spec"]["runtimePatches"]
    assert patch["manager"] == "speculators.ai/operator"
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    pod = node["template"]["spec"]["template"]
    assert pod["metadata"]["labels"]["speculators.ai/training"] == "llama"
    (ctr,) = pod["spec"]["containers"]
    assert ctr["name"] == "node" and {"name": "workspace", "mountPath": "/workspace"} in ctr["volumeMounts"]
    assert set(ctr) == {"name", "volumeMounts", "securityContext"}  # Trainer's ContainerPatch: no env, image
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert train_service(ctx) is None and train_service(job_ctx) is not None  # Trainer brings its own
    for step in steps_for(ctx.spec):
        if step != "train":
            assert step_job(ctx, step, step_hashes(ctx)[step])["kind"] == "Job"


def test_queue_name_labels_every_workload_and_jobs_start_suspended() -> None:
    ctx = _ctx(scheduling={"queueName": "gpu-team"}, training={"runtime": "trainjob"})
    hashes = step_hashes(ctx)
    for step in steps_for(ctx.spec):
        obj = step_job(ctx, step, hashes[step])
        assert obj["metadata"]["labels"][QUEUE] == "gpu-team", step
        if obj["kind"] == "Job":
            assert obj["spec"]["suspend"] is True  # Kueue admits it
    plain = _ctx()
    assert "suspend" not in step_job(plain, "prepare", step_hashes(plain)["prepare"])["spec"]
    spd = SpeculatorContext.of(speculator(scheduling={"queueName": "serving"}), IMAGES)
    dep = deployment(spd, ResolvedDraft(ModelSource(uri="hf://org/draft"), "eagle3", 3))
    assert dep["metadata"]["labels"][QUEUE] == "serving"
    assert dep["spec"]["template"]["metadata"]["labels"][QUEUE] == "serving"
