"""The SpeculatorTraining state machine (pure): Jobs created one step at a time, results copied to status."""

from __future__ import annotations

import json
from typing import Any

from spd_testlib import LATER, NOW, as_observed_job, terminated_pod, training

from speculators_operator.render.training import TrainingContext, step_hashes, step_job
from speculators_operator.status.conditions import find
from speculators_operator.status.training import TrainingObserved, derive_training

TRAIN_SUMMARY = {
    "step": "train",
    "epochs": 2,
    "steps": 100,
    "loss": 1.2345678,
    "acc": [0.81, 0.62, 0.47],
    "cond_acc": [0.81, 0.7, 0.6],
    "est_accept_len": 2.631,
    "tokens_per_s": 12000.5,
    "output": "x",
}
EVAL_SUMMARY = {
    "step": "eval",
    "k": 3,
    "temperature": 0.7,
    "mean_accept_len": 2.7,
    "per_pos": [0.8, 0.6, 0.45],
    "speedup": 2.1,
    "samples": 200,
}


def _run(body, jobs=None, pods=None, speculator=None, now=NOW, workspace=None):
    observed = TrainingObserved(jobs=jobs or {}, pods=pods or {}, speculator=speculator, workspace=workspace)
    return derive_training(body, observed, now=now)


def _apply_status(body, plan):
    body = dict(body)
    body["status"] = plan.status
    return body


def _done(body, step, summary=None, state="Complete", **counts):
    ctx = TrainingContext.of(body)
    job = as_observed_job(step_job(ctx, step, step_hashes(ctx)[step]), state, **counts)
    name = job["metadata"]["name"]
    message = json.dumps(summary) if summary else ""
    exit_code = 0 if state == "Complete" else 2
    return job, {name: [terminated_pod(name, step, exit_code=exit_code, message=message)]}


def _cond(plan, type_):
    return find(plan.status["conditions"], type_)


def test_first_reconcile_creates_the_workspace_and_the_prepare_job():
    body = training()
    plan = _run(body)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in plan.create]
    assert kinds == [("PersistentVolumeClaim", "llama-workspace"), ("Job", "llama-prepare")]
    assert plan.apply == [] and plan.delete == []
    st = plan.status
    assert st["phase"] == "Pending" and st["observedGeneration"] == 1
    assert st["steps"] == [
        {
            "name": "prepare",
            "jobName": "llama-prepare",
            "state": "Pending",
            "hash": step_hashes(TrainingContext.of(body))["prepare"],
            "attempts": 0,
        }
    ]
    assert [c["type"] for c in st["conditions"]] == [
        "DataPrepared",
        "HiddenStatesGenerated",
        "Trained",
        "Evaluated",
        "Promoted",
        "Ready",
    ]
    assert {c["status"] for c in st["conditions"]} == {"Unknown"}  # progressing, not degraded
    assert _cond(plan, "Ready")["reason"] == "Pending"
    assert st["progress"] == {"percent": 0, "completedShards": 0, "totalShards": 1}
    assert [e.reason for e in plan.events] == ["JobCreated", "Pending"]


def test_steps_advance_and_results_are_copied():
    body = training(datagen={"shards": 4})
    job, pods = _done(
        body, "prepare", {"step": "prepare", "samples": 9000, "tokens": 12_000_000, "heldout": 450}
    )
    plan = _run(body, {"prepare": job}, pods)
    assert [o["metadata"]["name"] for o in plan.create if o["kind"] == "Job"] == ["llama-datagen"]
    assert plan.status["phase"] == "GeneratingHiddenStates"
    assert _cond(plan, "DataPrepared")["status"] == "True"
    assert _cond(plan, "DataPrepared")["message"] == "9000 samples, 12000000 tokens, 450 held out"
    body = _apply_status(body, plan)

    # Datagen half done: progress counts shards.
    ctx = TrainingContext.of(body)
    datagen = as_observed_job(
        step_job(ctx, "datagen", step_hashes(ctx)["datagen"]), "Running", succeeded=2, active=2, ready=2
    )
    plan = _run(body, {"prepare": job, "datagen": datagen}, pods, workspace={"metadata": {}})
    assert plan.create == []  # the claim exists, the running step's Job too
    assert plan.status["progress"] == {
        "percent": 26,
        "completedShards": 2,
        "totalShards": 4,
    }  # (10 + 30/2) / 95
    assert plan.status["phase"] == "GeneratingHiddenStates"
    assert _cond(plan, "HiddenStatesGenerated")["message"] == "2/4 shards"
    body = _apply_status(body, plan)

    # Everything before train done; the prepare Job has been removed by its TTL meanwhile.
    datagen_done, _ = _done(body, "datagen", {"step": "datagen", "shard": 0}, succeeded=4)
    plan = _run(body, {"datagen": datagen_done})
    assert [o["metadata"]["name"] for o in plan.create] == ["llama-workspace", "llama-train"]
    assert plan.status["phase"] == "Training"
    assert plan.status["steps"][0]["state"] == "Succeeded"  # remembered from status
    body = _apply_status(body, plan)

    train_job, train_pods = _done(body, "train", TRAIN_SUMMARY)
    plan = _run(body, {"train": train_job}, train_pods)
    assert plan.status["phase"] == "Evaluating"
    assert plan.status["metrics"] == {
        "accuracy": [0.81, 0.62, 0.47],
        "loss": 1.2346,
        "estimatedAcceptanceLength": 2.631,
        "tokensPerSecond": 12000.5,
    }
    assert plan.status["output"] == {
        "uri": "pvc://llama-workspace/llama/model",
        "method": "eagle3",
        "numSpeculativeTokens": 3,
    }
    body = _apply_status(body, plan)

    eval_job, eval_pods = _done(body, "eval", EVAL_SUMMARY)
    plan = _run(body, {"eval": eval_job}, eval_pods, now=LATER)  # the train Job is gone: metrics stay
    st = plan.status
    assert st["phase"] == "Succeeded" and st["completionTime"] == LATER
    assert st["metrics"]["estimatedAcceptanceLength"] == 2.631
    assert st["evaluation"] == {
        "perPositionAcceptance": [0.8, 0.6, 0.45],
        "numSpeculativeTokens": 3,
        "meanAcceptanceLength": 2.7,
        "expectedSpeedup": 2.1,
        "samples": 200,
        "temperature": 0.7,  # what the numbers were measured at
    }
    assert st["progress"]["percent"] == 100
    ready = _cond(plan, "Ready")
    assert ready["status"] == "True" and ready["reason"] == "Succeeded"
    assert _cond(plan, "Promoted")["status"] == "True" and st["promotion"]["promoted"] is True
    assert [e.reason for e in plan.events] == ["Promoted", "Succeeded"]
    body = _apply_status(body, plan)

    # Level-triggered: once everything is done and the Jobs are gone, nothing is created again.
    plan = _run(body, {}, now=LATER, workspace={"metadata": {}})
    assert plan.create == []
    assert plan.status == body["status"] and plan.events == []


def test_lasttransitiontime_is_kept_when_nothing_changes():
    body = training()
    plan = _run(body, now=NOW)
    body = _apply_status(body, plan)
    plan2 = _run(body, now=LATER)
    assert _cond(plan2, "Ready")["lastTransitionTime"] == NOW


def test_permanent_failure_fails_the_training_and_is_not_retried_after_ttl():
    body = training()
    job, pods = _done(body, "prepare", state="Failed", failed=1)
    pods["llama-prepare"][0]["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = (
        "error: dataset hf://HuggingFaceH4/ultrachat_200k has no split 'train_sft'"
    )
    plan = _run(body, {"prepare": job}, pods)
    st = plan.status
    assert st["phase"] == "Failed"
    assert st["steps"][0]["state"] == "Failed" and st["steps"][0]["attempts"] == 1
    ready = _cond(plan, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "PrepareFailed"
    assert "has no split" in ready["message"] and "exited with code 2" in ready["message"]
    assert _cond(plan, "DataPrepared")["status"] == "False"
    assert _cond(plan, "Trained")["reason"] == "NotRun"
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "Failed")]
    body = _apply_status(body, plan)
    plan = _run(body, {}, workspace={"metadata": {}})  # the failed Job's TTL removed it
    assert plan.create == []
    assert plan.status["phase"] == "Failed"


def _with_retry(body, token):
    body = dict(body)
    body["metadata"] = {**body["metadata"], "annotations": {"speculators.ai/retry": token}}
    return body


def test_retry_annotation_replaces_the_failed_job_once():
    body = training()
    job, pods = _done(body, "train", state="Failed", failed=4)
    prior = {s: _done(body, s)[0] for s in ("prepare", "datagen")}
    plan = _run(body, {**prior, "train": job}, pods, workspace={"metadata": {}})
    assert plan.status["phase"] == "Failed" and plan.delete == []
    # The user (or Argo CD) sets the annotation: the failed Job goes, the finished steps stay finished.
    body = _with_retry(_apply_status(body, plan), "1")
    plan = _run(body, {**prior, "train": job}, pods, workspace={"metadata": {}})
    assert [o["metadata"]["name"] for o in plan.delete] == ["llama-train"]
    assert plan.status["retryToken"] == "1" and plan.status["phase"] == "Training"
    assert [(e.reason, e.message) for e in plan.events if e.reason == "Retrying"] == [
        ("Retrying", "replacing Job llama-train: speculators.ai/retry=1")
    ]
    # Once the old Job is gone the step runs again; a second failure stays failed (the token is spent).
    body = _apply_status(body, plan)
    plan = _run(body, prior, workspace={"metadata": {}})
    assert [o["metadata"]["name"] for o in plan.create] == ["llama-train"]
    body = _apply_status(body, plan)
    plan = _run(body, {**prior, "train": job}, pods, workspace={"metadata": {}})
    assert plan.status["phase"] == "Failed" and plan.delete == [] and plan.status["retryToken"] == "1"


def test_retry_after_the_failed_jobs_ttl_creates_it_again():
    body = training()
    job, pods = _done(body, "prepare", state="Failed", failed=1)
    body = _apply_status(body, _run(body, {"prepare": job}, pods))
    body = _with_retry(body, "after-fixing-the-secret")
    plan = _run(body, {}, workspace={"metadata": {}})  # the Job's TTL removed it
    assert [o["metadata"]["name"] for o in plan.create] == ["llama-prepare"]
    assert plan.status["phase"] == "Pending" and plan.status["retryToken"] == "after-fixing-the-secret"


def test_retry_annotation_without_a_failure_is_spent_as_a_no_op():
    body = _with_retry(training(), "x")
    plan = _run(body, workspace={"metadata": {}})
    assert plan.status["retryToken"] == "x" and plan.delete == []
    assert [o["metadata"]["name"] for o in plan.create if o["kind"] == "Job"] == ["llama-prepare"]


def test_changed_inputs_replace_the_job():
    body = training()
    job, pods = _done(body, "prepare", state="Running", active=1)
    job["status"]["conditions"] = []
    job["metadata"]["annotations"]["speculators.ai/spec-hash"] = "stale"
    plan = _run(body, {"prepare": job}, pods)
    assert [o["metadata"]["name"] for o in plan.delete] == ["llama-prepare"]
    assert not [o for o in plan.create if o["kind"] == "Job"]  # after the old one is gone
    assert plan.status["steps"][0]["message"] == "replacing Job llama-prepare (inputs changed)"


def test_online_mode_skips_datagen():
    body = training(training={"mode": "online"})
    plan = _run(body)
    hs = _cond(plan, "HiddenStatesGenerated")
    assert hs["status"] == "True" and hs["reason"] == "Skipped"
    assert "completedShards" not in plan.status["progress"]


def test_deploy_block_creates_the_speculator_after_success_and_reports_its_readiness():
    body = training(training={"mode": "online"}, deploy={"replicas": 1})
    prev = {}
    for step, summary in (("prepare", None), ("train", TRAIN_SUMMARY), ("eval", EVAL_SUMMARY)):
        job, pods = _done(body, step, summary)
        plan = _run(body, {step: job}, pods)
        assert not [o for o in plan.apply if o["kind"] == "Speculator"] or step == "eval"
        body = _apply_status(body, plan)
        prev = plan
    (child,) = [o for o in prev.apply if o["kind"] == "Speculator"]
    assert child["spec"]["draft"] == {"trainingRef": {"name": "llama"}}
    assert prev.status["speculatorRef"] == {"name": "llama"}
    assert _cond(prev, "Deployed")["status"] == "Unknown"
    assert prev.status["phase"] == "Succeeded" and _cond(prev, "Ready")["status"] == "Unknown"
    child["metadata"]["generation"] = 1
    ready = {"type": "Ready", "status": "True", "reason": "Running", "message": "ok"}
    # Ready, but still serving another draft (a Speculator taken over from an older training): not yet.
    old = "pvc://llama-workspace/older/model"
    child["status"] = {"observedGeneration": 1, "conditions": [ready], "draft": {"uri": old}}
    plan = _run(body, {}, speculator=child)
    assert (_cond(plan, "Deployed")["status"], _cond(plan, "Deployed")["reason"]) == ("Unknown", "Deploying")
    # Our draft, at the generation we applied: Deployed follows its Ready.
    child["status"]["draft"] = {"uri": "pvc://llama-workspace/llama/model"}
    plan = _run(body, {}, speculator=child)
    assert _cond(plan, "Deployed")["status"] == "True"
    assert _cond(plan, "Ready")["status"] == "True"
    child["metadata"]["generation"] = 2  # our spec change, not reconciled by the Speculator yet
    assert _cond(_run(body, {}, speculator=child), "Deployed")["status"] == "Unknown"


def test_publish_step_records_the_uploads():
    body = training(
        training={"mode": "online"}, output={"s3": {"uri": "s3://models/x", "secretRef": {"name": "a"}}}
    )
    for step, summary in (("prepare", None), ("train", TRAIN_SUMMARY), ("eval", EVAL_SUMMARY)):
        job, pods = _done(body, step, summary)
        body = _apply_status(body, _run(body, {step: job}, pods))
    assert body["status"]["phase"] == "Publishing"
    job, pods = _done(body, "publish", {"step": "publish", "uri": "s3://models/x"})
    plan = _run(body, {"publish": job}, pods)
    assert plan.status["output"]["s3Uri"] == "s3://models/x"
    assert _cond(plan, "Published")["status"] == "True"
    assert plan.status["phase"] == "Succeeded"


def test_a_trainjob_reads_as_a_step() -> None:
    """Kubeflow Trainer's TrainJob: suspended by Kueue (pending, with why), running, complete, failed."""
    from speculators_operator.status.jobs import observe_step

    def trainjob(conditions: list[dict[str, Any]], **jobs: int) -> dict[str, Any]:
        meta = {"name": "t-train", "annotations": {"speculators.ai/spec-hash": "h"}}
        status = {"conditions": conditions, "jobsStatus": [{"name": "node", **jobs}] if jobs else []}
        return {"kind": "TrainJob", "metadata": meta, "status": status}

    queued = observe_step(trainjob([{"type": "Suspended", "status": "True", "reason": "Suspended"}]), [])
    assert queued.state == "Pending" and queued.pending_reason.startswith("Suspended")
    running = observe_step(trainjob([], active=2, ready=2), [])
    assert (running.state, running.active, running.hash) == ("Running", 2, "h")
    done = observe_step(trainjob([{"type": "Complete", "status": "True", "reason": "AllJobsCompleted"}]), [])
    assert done.state == "Succeeded" and done.reason == "AllJobsCompleted"
    failed = {"type": "Failed", "status": "True", "reason": "FailedJobs", "message": "jobset failed"}
    observed = observe_step(trainjob([failed], failed=1), [])
    assert observed.state == "Failed" and observed.failure_text() == "jobset failed"


def test_a_dflash_training_outputs_a_dflash_draft_with_its_blocks_k():
    body = training(algorithm="dflash", training={"mode": "online"})  # online: prepare, then train
    train_job, train_pods = _done(body, "train", TRAIN_SUMMARY)
    prepare_job, _ = _done(body, "prepare")
    plan = _run(body, {"prepare": prepare_job, "train": train_job}, train_pods)
    assert plan.status["output"] == {
        "uri": "pvc://llama-workspace/llama/model",
        "method": "dflash",
        "numSpeculativeTokens": 15,  # the whole recipe block of 16
        "maxSpeculativeTokens": 15,  # what one block drafts: automatic k never goes past it
    }
