"""The promotion gate: is a trained draft worth serving? Pure functions over the evaluation and what the
deploy target serves today.

The decision is made once, when the evaluation has finished, and kept in status.promotion for that
evaluation (its step hash): after a promotion the target serves the new draft, so its live numbers are
the candidate's own and must not be compared again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from speculators_core.eval.cost import acceptance_length_by_k
from speculators_operator.api.training import PromotionSpec
from speculators_operator.status.conditions import Cond, find

PASSED = "Passed"
BELOW = "BelowThreshold"
NOT_BETTER = "NotBetterThanServing"
NO_EVALUATION = "NoEvaluation"


@dataclass(frozen=True)
class ServingMeasure:
    """The bar: what the draft the target serves now achieved, at k."""

    uri: str
    source: str  # live | offline
    k: int | None
    mean_acceptance_length: float
    drafts: int | None = None
    prompt_set: str | None = None

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "uri": self.uri,
            "source": self.source,
            "meanAcceptanceLength": round(self.mean_acceptance_length, 4),
        }
        if self.k is not None:
            out["numSpeculativeTokens"] = self.k
        if self.drafts is not None:
            out["drafts"] = self.drafts
        return out


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _length_at(evaluation: dict[str, Any], k: int | None) -> float | None:
    """The evaluated mean acceptance length at k (from the per-k table), else at the evaluated k."""
    table = [float(v) for v in evaluation.get("acceptanceLengthByK") or [] if _num(v) is not None]
    if not table and evaluation.get("perPositionAcceptance"):
        table = acceptance_length_by_k(evaluation["perPositionAcceptance"])
    if k is not None and 1 <= k <= len(table):
        return table[k - 1]
    if k is not None and table:
        return table[-1]  # the served k is beyond what was evaluated: the longest measured
    return _num(evaluation.get("meanAcceptanceLength"))


def serving_measure(
    target: dict[str, Any] | None,
    target_training: dict[str, Any] | None,
    own_uri: str,
    min_live_drafts: int,
) -> ServingMeasure | None:
    """What the deploy target serves now and how well, if it serves a draft other than ours."""
    if target is None:
        return None
    status = target.get("status") or {}
    draft = status.get("draft") or {}
    uri = draft.get("uri")
    if not uri or uri == own_uri:
        return None
    k = draft.get("numSpeculativeTokens") if isinstance(draft.get("numSpeculativeTokens"), int) else None
    live = status.get("acceptance") or {}
    length = _num(live.get("meanAcceptanceLength"))
    drafts = int(live.get("drafts") or 0)
    if length is not None and drafts >= min_live_drafts:
        return ServingMeasure(uri, "live", k, length, drafts=drafts)
    if target_training is not None:
        tstatus = target_training.get("status") or {}
        if (tstatus.get("output") or {}).get("uri") == uri:
            evaluation = tstatus.get("evaluation") or {}
            offline = _length_at(evaluation, k)
            if offline is not None:
                return ServingMeasure(uri, "offline", k, offline, prompt_set=evaluation.get("promptSet"))
    return None


def decide(
    spec: PromotionSpec,
    evaluation: dict[str, Any] | None,
    serving: ServingMeasure | None,
    *,
    has_target: bool,
) -> dict[str, Any]:
    """status.promotion (without decidedAt/evalHash) for a finished evaluation."""
    evaluation = evaluation or {}
    k = evaluation.get("numSpeculativeTokens")
    length = _num(evaluation.get("meanAcceptanceLength"))
    speedup = _num(evaluation.get("expectedSpeedup"))
    out: dict[str, Any] = {}
    if length is not None:
        out["meanAcceptanceLength"] = round(length, 4)
    if speedup is not None:
        out["expectedSpeedup"] = round(speedup, 4)

    def result(promoted: bool, reason: str, message: str) -> dict[str, Any]:
        return {"promoted": promoted, "reason": reason, "message": message, **out}

    if length is None or speedup is None:
        return result(False, NO_EVALUATION, "the evaluation reported no acceptance length or speed-up")
    at = f"at k={k}"
    if spec.min_mean_acceptance_length is not None and length < spec.min_mean_acceptance_length:
        return result(
            False,
            BELOW,
            f"mean acceptance length {length:.3f} {at} is below promotion.minMeanAcceptanceLength "
            f"{spec.min_mean_acceptance_length:g}",
        )
    if speedup < spec.min_expected_speedup:
        return result(
            False,
            BELOW,
            f"expected speed-up {speedup:.3f} {at} is below promotion.minExpectedSpeedup "
            f"{spec.min_expected_speedup:g}",
        )
    passed = f"mean acceptance length {length:.3f}, expected speed-up {speedup:.3f} {at}"
    if not spec.must_beat_serving or not has_target:
        return result(True, PASSED, passed)
    if serving is None:
        return result(True, PASSED, f"{passed}; the deploy target serves no other measured draft")
    out["serving"] = serving.wire()
    mine = _length_at(evaluation, serving.k)
    assert mine is not None
    where = f"k={serving.k}" if serving.k is not None else "its k"
    what = "live" if serving.source == "live" else "offline-evaluated"
    versus = f"{mine:.3f} at {where} vs the serving draft's {what} {serving.mean_acceptance_length:.3f}" + (
        f" over {serving.drafts} drafts" if serving.drafts is not None else ""
    )
    if (
        serving.source == "offline"
        and serving.prompt_set
        and serving.prompt_set != evaluation.get("promptSet")
    ):
        versus += " (evaluated on a different prompt set)"
    if mine <= serving.mean_acceptance_length:
        return result(False, NOT_BETTER, f"mean acceptance length {versus}: not better")
    return result(True, PASSED, f"{passed}; beats the serving draft: {versus}")


def condition(decision: dict[str, Any] | None, evaluated: bool) -> Cond:
    if decision is None:
        if evaluated:
            return Cond("Promoted", "Unknown", "Deciding", "the promotion gate is deciding")
        return Cond("Promoted", "Unknown", "Waiting", "decided when the evaluation has finished")
    status = "True" if decision.get("promoted") else "False"
    return Cond("Promoted", status, str(decision.get("reason") or PASSED), str(decision.get("message") or ""))


def decision_time(training: dict[str, Any]) -> str:
    """When a training's draft was promoted ("" for none or before the gate existed): newer wins a target."""
    status = training.get("status") or {}
    promotion = status.get("promotion") or {}
    if promotion.get("promoted"):
        return str(promotion.get("decidedAt") or "")
    if promotion:
        return ""
    # A training from before the gate: its completion stands for the decision.
    ready = find(status.get("conditions"), "Ready") or {}
    return str(status.get("completionTime") or ready.get("lastTransitionTime") or "")


__all__ = ["ServingMeasure", "condition", "decide", "decision_time", "serving_measure"]
