"""The promotion gate: table-driven decisions, what counts as the serving draft's bar, and the training's
status and actions around it (deploy held back, kept decisions, a newer promotion taking a target over)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from spd_testlib import LATER, NOW, as_observed_job, terminated_pod, training

from speculators_operator.api.training import PromotionSpec
from speculators_operator.render.training import TrainingContext, step_hashes, step_job
from speculators_operator.status.promotion import ServingMeasure, decide, decision_time, serving_measure
from speculators_operator.status.training import TrainingObserved, derive_training

EVALUATION = {
    "numSpeculativeTokens": 3,
    "meanAcceptanceLength": 2.6,
    "expectedSpeedup": 2.0,
    "acceptanceLengthByK": [1.8, 2.3, 2.6, 2.8],
    "promptSet": "aaaa",
}


def live(length: float, k: int = 3, drafts: int = 1000) -> ServingMeasure:
    return ServingMeasure("hf://org/old", "live", k, length, drafts=drafts)


@pytest.mark.parametrize(
    ("promotion", "evaluation", "serving", "has_target", "promoted", "reason", "needle"),
    [
        ({}, EVALUATION, None, False, True, "Passed", "expected speed-up 2.000 at k=3"),
        (
            {},
            {**EVALUATION, "expectedSpeedup": 0.93},
            None,
            False,
            False,
            "BelowThreshold",
            "minExpectedSpeedup 1",
        ),
        ({"minExpectedSpeedup": 2.5}, EVALUATION, None, False, False, "BelowThreshold", "below"),
        ({"minMeanAcceptanceLength": 3}, EVALUATION, None, False, False, "BelowThreshold", "2.600 at k=3"),
        ({"minMeanAcceptanceLength": 2.5}, EVALUATION, None, False, True, "Passed", ""),
        ({}, {"numSpeculativeTokens": 3}, None, False, False, "NoEvaluation", "no acceptance length"),
        ({}, None, None, False, False, "NoEvaluation", ""),
        # mustBeatServing compares at the served k, from the per-k table
        ({}, EVALUATION, live(2.5), True, True, "Passed", "2.600 at k=3 vs the serving draft's live 2.500"),
        ({}, EVALUATION, live(2.7), True, False, "NotBetterThanServing", "not better"),
        ({}, EVALUATION, live(2.6), True, False, "NotBetterThanServing", "2.600"),  # a tie is not better
        ({}, EVALUATION, live(2.25, k=2), True, True, "Passed", "2.300 at k=2"),
        ({}, EVALUATION, live(2.35, k=2), True, False, "NotBetterThanServing", "2.300 at k=2"),
        ({}, EVALUATION, live(2.9, k=6), True, False, "NotBetterThanServing", "2.800 at k=6"),
        ({"mustBeatServing": False}, EVALUATION, live(2.9), True, True, "Passed", ""),
        ({}, EVALUATION, None, True, True, "Passed", "serves no other measured draft"),
        (
            {},
            EVALUATION,
            ServingMeasure("pvc://ws/old/model", "offline", 3, 2.4, prompt_set="bbbb"),
            True,
            True,
            "Passed",
            "offline-evaluated 2.400 (evaluated on a different prompt set)",
        ),
    ],
)
def test_gate_decisions(promotion, evaluation, serving, has_target, promoted, reason, needle):
    out = decide(PromotionSpec.model_validate(promotion), evaluation, serving, has_target=has_target)
    assert (out["promoted"], out["reason"]) == (promoted, reason)
    assert needle in out["message"]
    if (
        serving is not None
        and has_target
        and reason != "BelowThreshold"
        and promotion.get("mustBeatServing", True)
    ):
        assert out["serving"]["source"] == serving.source


def _speculator(
    uri: str, *, k: int = 3, length: float | None = None, drafts: int = 0, ref: str | None = None
):
    status: dict[str, Any] = {"draft": {"uri": uri, "method": "eagle3", "numSpeculativeTokens": k}}
    if length is not None:
        status["acceptance"] = {"meanAcceptanceLength": length, "drafts": drafts}
    spec = {"draft": {"trainingRef": {"name": ref}} if ref else {"uri": uri}}
    return {"metadata": {"name": "serving", "namespace": "ns"}, "spec": spec, "status": status}


def test_serving_measure_prefers_a_full_live_window_then_the_offline_evaluation():
    old = {"status": {"output": {"uri": "pvc://ws/old/model"}, "evaluation": EVALUATION}}
    mine = "pvc://ws/new/model"
    assert serving_measure(None, None, mine, 200) is None
    assert serving_measure(_speculator(mine, length=3.0, drafts=900), None, mine, 200) is None  # ours already
    target = _speculator("pvc://ws/old/model", length=2.2, drafts=900, ref="old")
    assert serving_measure(target, old, mine, 200) == ServingMeasure(
        "pvc://ws/old/model", "live", 3, 2.2, 900
    )
    few = _speculator("pvc://ws/old/model", length=2.2, drafts=50, ref="old")
    offline = serving_measure(few, old, mine, 200)
    assert offline is not None and (offline.source, offline.mean_acceptance_length) == ("offline", 2.6)
    assert serving_measure(few, None, mine, 200) is None  # nothing measured it


# -- the gate inside derive_training -------------------------------------------------------------------

SUMMARY = {
    "step": "eval",
    "k": 3,
    "mean_accept_len": 2.6,
    "per_pos": [0.8, 0.5, 0.3],
    "speedup": 2.0,
    "accept_len_by_k": [1.8, 2.3, 2.6, 2.8],
    "speedup_by_k": [1.7, 2.0, 2.0, 1.9],
    "cond_per_pos": [0.8, 0.625, 0.6, 0.66],
    "draft_cost_ratio": 0.05,
    "prompt_set": {"sha256": "aaaa", "prompts": 8, "created": True},
    "samples": 8,
}


def _finished(name: str = "new", summary: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """A training whose steps all finished (remembered in status), with the eval Job still there."""
    body = training(name, deploy={"name": "serving"}, **spec)
    ctx = TrainingContext.of(body)
    hashes = step_hashes(ctx)
    body["status"] = {
        "steps": [
            {"name": s, "jobName": f"{name}-{s}", "state": "Succeeded", "hash": hashes[s]}
            for s in ("prepare", "datagen", "train")
        ],
        "phase": "Evaluating",
    }
    return body


def _eval_observed(body: dict[str, Any], summary: dict[str, Any], **observed: Any) -> TrainingObserved:
    import json

    ctx = TrainingContext.of(body)
    name = body["metadata"]["name"]
    job = as_observed_job(step_job(ctx, "eval", step_hashes(ctx)["eval"]), "Complete", succeeded=1)
    pod = terminated_pod(f"{name}-eval", "eval", message=json.dumps(summary))
    return TrainingObserved(jobs={"eval": job}, pods={f"{name}-eval": [pod]}, **observed)


def _cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def _with_status(body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["status"] = status
    return out


def test_a_draft_below_the_gate_is_kept_but_not_deployed():
    body = _finished()
    plan = derive_training(body, _eval_observed(body, {**SUMMARY, "speedup": 0.9}), now=NOW)
    st = plan.status
    assert st["phase"] == "Succeeded" and st["output"]["uri"] == "pvc://new-workspace/new/model"
    assert plan.apply == []  # no Speculator
    promoted = _cond(st, "Promoted")
    assert (promoted["status"], promoted["reason"]) == ("False", "BelowThreshold")
    assert "expected speed-up 0.900 at k=3 is below promotion.minExpectedSpeedup 1" in promoted["message"]
    deployed = _cond(st, "Deployed")
    assert (deployed["status"], deployed["reason"]) == ("False", "NotPromoted")
    ready = _cond(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Succeeded") and "not promoted" in ready["message"]
    assert ("Warning", "NotPromoted") in [(e.type, e.reason) for e in plan.events]
    assert st["evaluation"]["acceptanceLengthByK"] == [1.8, 2.3, 2.6, 2.8]
    assert st["evaluation"]["promptSet"] == "aaaa" and st["evaluation"]["draftCostRatio"] == 0.05


def test_the_decision_is_kept_and_not_recomputed_against_its_own_draft():
    old_target = _speculator("pvc://ws/old/model", length=2.4, drafts=5000, ref="old")
    body = _finished()
    plan = derive_training(body, _eval_observed(body, SUMMARY, deploy_target=old_target), now=NOW)
    assert plan.status["promotion"]["promoted"] is True
    assert [o["kind"] for o in plan.apply] == ["Speculator"]
    assert plan.apply[0]["spec"]["draft"] == {"trainingRef": {"name": "new"}}
    body = _with_status(body, plan.status)
    # Now the target serves our draft, and its live numbers are worse than the old draft's were: no effect.
    ours = _speculator("pvc://new-workspace/new/model", length=2.0, drafts=5000, ref="new")
    ours["metadata"]["ownerReferences"] = [{"uid": body["metadata"]["uid"], "controller": True}]
    plan = derive_training(body, TrainingObserved(deploy_target=ours, speculator=ours), now=LATER)
    assert plan.status["promotion"] == body["status"]["promotion"]
    assert [o["kind"] for o in plan.apply] == ["Speculator"]
    assert not [e for e in plan.events if e.reason in ("Promoted", "NotPromoted")]


def test_not_better_than_serving_leaves_the_serving_speculator_alone():
    target = _speculator("pvc://ws/old/model", length=2.9, drafts=5000, ref="old")
    body = _finished()
    plan = derive_training(body, _eval_observed(body, SUMMARY, deploy_target=target), now=NOW)
    promoted = _cond(plan.status, "Promoted")
    assert (promoted["status"], promoted["reason"]) == ("False", "NotBetterThanServing")
    assert plan.status["promotion"]["serving"] == {
        "uri": "pvc://ws/old/model",
        "source": "live",
        "meanAcceptanceLength": 2.9,
        "numSpeculativeTokens": 3,
        "drafts": 5000,
    }
    assert plan.apply == []
    assert "keeps serving its current draft" in _cond(plan.status, "Deployed")["message"]


def test_new_thresholds_decide_again_on_the_same_evaluation():
    body = _finished()
    plan = derive_training(body, _eval_observed(body, SUMMARY), now=NOW)
    assert plan.status["promotion"]["promoted"] is True
    body = _with_status(body, plan.status)
    stricter = copy.deepcopy(body)
    stricter["spec"]["promotion"]["minExpectedSpeedup"] = 2.5  # the user raised the bar; eval unchanged
    plan = derive_training(stricter, TrainingObserved(), now=LATER)
    assert (
        plan.status["promotion"]["reason"] == "BelowThreshold"
        and plan.status["promotion"]["decidedAt"] == LATER
    )
    assert plan.apply == []
    assert [o for o in plan.create if o["kind"] == "Job"] == []  # the evaluation is not re-run for a new gate


def test_a_newer_promotion_takes_the_target_over_and_the_older_training_yields():
    older = _with_status(training("old"), {"promotion": {"promoted": True, "decidedAt": NOW}})
    target = _speculator("pvc://old-workspace/old/model", length=2.0, drafts=5000, ref="old")
    target["metadata"]["ownerReferences"] = [
        {"kind": "SpeculatorTraining", "name": "old", "uid": "uid-old", "controller": True}
    ]
    body = _finished()
    obs = _eval_observed(body, SUMMARY, deploy_target=target, target_training=older, target_controller=older)
    plan = derive_training(body, obs, now=LATER)
    assert plan.status["promotion"]["decidedAt"] == LATER
    assert [o["metadata"]["name"] for o in plan.apply] == ["serving"]  # takes it over
    newer = _with_status(body, plan.status)

    # The older training, on its next reconcile, sees the target controlled by the newer one: it yields.
    old_body = _finished("old")
    old_body["status"]["promotion"] = {"promoted": True, "decidedAt": NOW, "evalHash": "x"}
    decided = derive_training(old_body, _eval_observed(old_body, SUMMARY), now=NOW).status["promotion"]
    old_body["status"]["promotion"] = decided  # decided at NOW, for this evaluation and gate
    taken = copy.deepcopy(target)
    taken["metadata"]["ownerReferences"] = [
        {"kind": "SpeculatorTraining", "name": "new", "uid": "uid-new", "controller": True}
    ]
    obs = _eval_observed(old_body, SUMMARY, deploy_target=taken, target_controller=newer)
    plan = derive_training(old_body, obs, now=LATER)
    assert plan.apply == []
    deployed = _cond(plan.status, "Deployed")
    assert (deployed["status"], deployed["reason"]) == ("False", "Superseded")
    assert "now serves the draft of new" in deployed["message"]
    assert _cond(plan.status, "Ready")["status"] == "True"
    assert decision_time(newer) == LATER > decision_time(older) == NOW
