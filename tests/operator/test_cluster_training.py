"""SpeculatorTraining against the real control plane: the exact Jobs appear, kwok-simulated Job outcomes
drive the phases, results land in status, spec.deploy serves the draft, deletion collects everything.

Job pods run on kwok nodes (no containers: a stand-in for the GPU nodes and the container runtime); their
outcome and termination message come from the sim.speculators.ai markers. Pod Security `restricted` is
enforced in the namespace, so every pod the operator renders passes real PodSecurity admission.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Kube, OperatorProcess
from spd_testlib import DATASET, EVAL, PREPARE, TRAIN, assert_subset, cond, training_body

from speculators_operator.render.training import TrainingContext, step_hashes, step_job, workspace_pvc

pytestmark = pytest.mark.kwok


def expected_job(k: Kube, training: str, step: str) -> dict[str, Any]:
    body = k.get("SpeculatorTraining", training)
    ctx = TrainingContext.of(body)
    return step_job(ctx, step, step_hashes(ctx)[step])


def wait_job(k: Kube, name: str) -> dict[str, Any]:
    return k.wait(lambda: k.get("Job", name), what=f"Job {name}")


def test_pipeline_children_phases_results_and_deploy(operator: OperatorProcess, k: Kube) -> None:
    k.create(training_body(deploy={"replicas": 1, "metrics": {"enabled": False}}))

    # Workspace claim and the prepare Job, exactly as rendered.
    job = wait_job(k, "llama-prepare")
    assert_subset(expected_job(k, "llama", "prepare"), job)
    pvc = k.wait(lambda: k.get("PersistentVolumeClaim", "llama-workspace"), what="workspace PVC")
    assert_subset(workspace_pvc(TrainingContext.of(k.get("SpeculatorTraining", "llama"))), pvc)
    assert [j["metadata"]["name"] for j in k.list("Job")] == ["llama-prepare"]  # one step at a time
    status = k.wait_phase("SpeculatorTraining", "llama", "PreparingData")
    assert status["observedGeneration"] == 1
    assert cond(status, "Ready")["status"] == "Unknown"
    assert status["steps"][0]["name"] == "prepare" and status["steps"][0]["state"] == "Running"

    # prepare -> datagen: an Indexed Job, one pod per shard.
    k.release_pods("job-name=llama-prepare", message=json.dumps(PREPARE))
    datagen = wait_job(k, "llama-datagen")
    assert_subset(expected_job(k, "llama", "datagen"), datagen)
    assert (datagen["spec"]["completionMode"], datagen["spec"]["completions"]) == ("Indexed", 2)
    status = k.wait_phase("SpeculatorTraining", "llama", "GeneratingHiddenStates")
    assert cond(status, "DataPrepared")["status"] == "True"
    assert cond(status, "DataPrepared")["message"] == "900 samples, 123456 tokens, 45 held out"
    assert (
        len(k.wait(lambda: k.pods("job-name=llama-datagen"), lambda ps: len(ps) == 2, what="2 shard pods"))
        == 2
    )
    k.release_pods("job-name=llama-datagen", count=1, message=json.dumps({"step": "datagen", "shard": 0}))
    k.wait_status(
        "SpeculatorTraining",
        "llama",
        lambda s: s.get("progress", {}).get("completedShards") == 1,
        "one shard done",
    )
    k.release_pods("job-name=llama-datagen", count=1, message=json.dumps({"step": "datagen", "shard": 1}))

    # datagen -> train -> eval, the trainer's and evaluator's numbers copied into status.
    train = wait_job(k, "llama-train")
    assert_subset(expected_job(k, "llama", "train"), train)
    k.wait_phase("SpeculatorTraining", "llama", "Training")
    k.release_pods("job-name=llama-train", message=json.dumps(TRAIN))
    wait_job(k, "llama-eval")
    status = k.wait_phase("SpeculatorTraining", "llama", "Evaluating")
    assert status["metrics"] == {
        "accuracy": [0.7, 0.5, 0.3],
        "loss": 2.5,
        "estimatedAcceptanceLength": 2.21,
        "tokensPerSecond": 5000.0,
    }
    k.release_pods("job-name=llama-eval", message=json.dumps(EVAL))
    status = k.wait_phase("SpeculatorTraining", "llama", "Succeeded")
    assert status["output"] == {
        "uri": "pvc://llama-workspace/llama/model",
        "method": "eagle3",
        "numSpeculativeTokens": 3,
    }
    assert status["evaluation"] == {
        "perPositionAcceptance": [0.75, 0.45, 0.2],
        "numSpeculativeTokens": 3,
        "meanAcceptanceLength": 2.4,
        "expectedSpeedup": 1.9,
        "samples": 8,
    }
    assert status["progress"]["percent"] == 100
    assert [s["state"] for s in status["steps"]] == ["Succeeded"] * 4

    # spec.deploy: a Speculator serving the draft; the training is Ready once it is.
    spd = k.wait(lambda: k.get("Speculator", "llama"), what="deployed Speculator")
    assert spd["spec"]["draft"] == {"trainingRef": {"name": "llama"}}
    assert spd["metadata"]["ownerReferences"][0]["name"] == "llama"
    assert spd["metadata"]["labels"]["app.kubernetes.io/instance"] == "llama"
    k.wait_phase("Speculator", "llama", "Running")
    status = k.wait_status(
        "SpeculatorTraining", "llama", lambda s: cond(s, "Ready")["status"] == "True", "Ready"
    )
    assert cond(status, "Deployed")["status"] == "True"
    assert status["speculatorRef"] == {"name": "llama"}

    # Kopf's bookkeeping sits under the project's prefix; no finalizer was needed.
    meta = k.get("SpeculatorTraining", "llama")["metadata"]
    assert "speculators.ai/last-handled-configuration" in meta["annotations"]
    assert not [a for a in meta["annotations"] if a.startswith("kopf.zalando.org")]
    assert not meta.get("finalizers")

    reasons = {e["reason"] for e in k.events("llama")}
    assert {
        "JobCreated",
        "PreparingData",
        "GeneratingHiddenStates",
        "Training",
        "Evaluating",
        "Succeeded",
    } <= reasons

    # Deleting the training removes every child through garbage collection (ownerReferences).
    k.delete("SpeculatorTraining", "llama")
    k.wait(
        lambda: k.list("Job") + k.list("Deployment") + k.list("Service"),
        lambda objs: not objs,
        what="Jobs, Deployments and Services collected",
        timeout=90,
    )
    k.wait(lambda: k.get("Speculator", "llama"), lambda s: s is None, what="Speculator collected", timeout=90)
    k.wait(
        lambda: k.get("PersistentVolumeClaim", "llama-workspace"),
        lambda p: p is None or p["metadata"].get("deletionTimestamp"),
        what="workspace PVC collected",
        timeout=90,
    )


def test_permanent_failure(operator: OperatorProcess, k: Kube) -> None:
    k.create(
        training_body(
            "broken",
            podMetadata={
                "annotations": {
                    "sim.speculators.ai/outcome": "fail",
                    "sim.speculators.ai/exit-code": "2",
                    "sim.speculators.ai/termination-message": f"error: --data {DATASET}: no split train_sft",
                }
            },
        )
    )
    status = k.wait_phase("SpeculatorTraining", "broken", "Failed")
    ready = cond(status, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "PrepareFailed"
    assert "no split train_sft" in ready["message"] and "exited with code 2" in ready["message"]
    job = k.get("Job", "broken-prepare")
    # podFailurePolicy: exit code 2 is permanent, so the Job fails at once without using its retries.
    assert job["status"].get("failed") == 1
    assert any(
        c["type"] == "Failed" and c["reason"] == "PodFailurePolicy" for c in job["status"]["conditions"]
    )
    warnings = [e for e in k.events("broken") if e["type"] == "Warning"]
    assert any(e["reason"] == "Failed" and "no split" in e["message"] for e in warnings)
    assert k.get("Job", "broken-datagen") is None


def test_failed_training_pod_is_retried_from_its_checkpoint(operator: OperatorProcess, k: Kube) -> None:
    k.create(training_body("retry", training={"mode": "online", "maxRetries": 2}))
    k.release_pods("job-name=retry-prepare", message=json.dumps(PREPARE))
    job = wait_job(k, "retry-train")
    assert job["spec"]["backoffLimit"] == 2
    first = k.release_pods("job-name=retry-train", outcome="fail", exit_code=1, message="CUDA error: ECC")
    # The Job controller starts a new pod (same template: same --checkpoint-dir, so it resumes).
    pods = k.wait(
        lambda: [p for p in k.pods("job-name=retry-train") if p["metadata"]["name"] not in first],
        what="a second train pod",
        timeout=90,
    )
    args = pods[0]["spec"]["containers"][0]["args"]
    assert args[args.index("--checkpoint-dir") + 1] == "/workspace/retry/checkpoints"
    k.wait_status(
        "SpeculatorTraining",
        "retry",
        lambda s: any(st["name"] == "train" and st.get("attempts") == 2 for st in s.get("steps", [])),
        "2 attempts",
    )
    k.release_pods("job-name=retry-train", message=json.dumps(TRAIN))
    status = k.wait_phase("SpeculatorTraining", "retry", "Evaluating")
    assert cond(status, "Trained")["status"] == "True"


def test_retry_annotation_reruns_the_failed_step(operator: OperatorProcess, k: Kube) -> None:
    """A permanently failed step re-runs once per new speculators.ai/retry value; spec is never touched."""
    k.create(training_body("again", training={"mode": "online"}))
    k.release_pods("job-name=again-prepare", message=json.dumps(PREPARE))
    failed_job = wait_job(k, "again-train")
    k.release_pods("job-name=again-train", outcome="fail", exit_code=2, message="error: NCCL timeout")
    k.wait_phase("SpeculatorTraining", "again", "Failed")
    generation = k.get("SpeculatorTraining", "again")["metadata"]["generation"]
    k.patch("SpeculatorTraining", "again", {"metadata": {"annotations": {"speculators.ai/retry": "1"}}})
    job = k.wait(
        lambda: k.get("Job", "again-train"),
        lambda j: j is not None and j["metadata"]["uid"] != failed_job["metadata"]["uid"],
        what="a new train Job",
        timeout=90,
    )
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--checkpoint-dir") + 1] == "/workspace/again/checkpoints"  # resumes
    k.release_pods("job-name=again-train", message=json.dumps(TRAIN))
    status = k.wait_phase("SpeculatorTraining", "again", "Evaluating")
    assert status["retryToken"] == "1" and cond(status, "Trained")["status"] == "True"
    # The prepare step was not run again, and the spec is the user's.
    assert [st["attempts"] for st in status["steps"] if st["name"] == "prepare"] == [1]
    assert k.get("SpeculatorTraining", "again")["metadata"]["generation"] == generation
    assert any(e["reason"] == "Retrying" for e in k.events("again"))
