"""The closed loop of a Speculator (spec.retrain): drift -> retrain -> canary -> promote or roll back.

Pure: from the previous status, the retrain trainings, the canary Deployment and the two live acceptance
windows (stable pods, canary pods) to the next status, the objects to create/delete and the Events. The
state lives in status.retrain and status.canary, so an operator restart resumes where it was; spec is
never written — a promoted draft is served from status.retrain.promoted until spec.draft changes.

    served draft --live window below the bar for forSeconds--> SpeculatorTraining <name>-r<N>
      --Succeeded, Promoted=True (its gate vs the live numbers)--> canary Deployment <name>-vllm-canary
      --windowSeconds, minDrafts on both sides--> better: Promoting -> stable rolls -> Promoted
                                                  not:    RolledBack (canary deleted)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from speculators_core.eval.cost import acceptance_length_by_k
from speculators_operator import constants as c
from speculators_operator.api.common import ModelSource
from speculators_operator.api.speculator import DraftSource
from speculators_operator.render import retrain as render_retrain
from speculators_operator.render.speculator import ResolvedDraft, SpeculatorContext
from speculators_operator.status.conditions import Cond, find, parse_time
from speculators_operator.status.plan import Event

ACTIVE = ("Starting", "Running", "Promoting")
MAX_PREVIOUS = 5
MAX_BACKOFF = 16  # cooldown multiplier after consecutive failures


@dataclass
class LoopObserved:
    trainings: dict[str, dict[str, Any]] = field(default_factory=dict)  # retrain trainings we own
    canary: dict[str, Any] | None = None  # the canary Deployment
    canary_acceptance: dict[str, Any] | None = None  # summary of the canary pods' window
    stable_acceptance: dict[str, Any] | None = None  # status.acceptance (stable pods only)
    stable_uri: str | None = None  # the draft the stable Deployment serves (its annotation)
    stable_ready: bool = False  # the stable Deployment has rolled out and is available
    # backend kserve: the canary Deployment is KServe's (it goes when spec.canary does), and a KServe
    # without spec.canary (< 0.20) dropped the field: why no canary can run, then.
    canary_owned: bool = True
    canary_refused: str | None = None


@dataclass
class LoopOutcome:
    stable: ResolvedDraft  # what the stable pods serve
    canary: ResolvedDraft | None = None  # render the canary Deployment with this draft (k: the stable's)
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[dict[str, Any]] = field(default_factory=list)
    retrain: dict[str, Any] | None = None
    canary_status: dict[str, Any] | None = None
    previous_drafts: list[dict[str, Any]] = field(default_factory=list)
    conditions: list[Cond] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def draft_identity(draft: DraftSource) -> str:
    """What spec.draft names (a promoted draft replaces exactly this; another spec.draft wins again)."""
    if draft.training_ref is not None:
        return f"training:{draft.training_ref.name}"
    return f"uri:{draft.uri}@{draft.revision or ''}"


def served_draft(deployment: dict[str, Any] | None) -> str | None:
    """The draft a vLLM Deployment serves: its annotation (ours), else its pod template's (KServe's)."""
    if deployment is None:
        return None
    found = (deployment["metadata"].get("annotations") or {}).get(c.ANNOTATION_DRAFT)
    template = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    return found or (template.get("annotations") or {}).get(c.ANNOTATION_DRAFT)


def _seconds(since: str | None, now: str) -> float:
    a, b = parse_time(since), parse_time(now)
    return (b - a) if a is not None and b is not None else 0.0


def measure(
    summary: dict[str, Any] | None, uri: str | None, k: int | None, now: str
) -> dict[str, Any] | None:
    """An AcceptanceMeasure of a live window."""
    if not summary or summary.get("meanAcceptanceLength") is None:
        return None
    out: dict[str, Any] = {
        "meanAcceptanceLength": summary["meanAcceptanceLength"],
        "perPosition": list(summary.get("perPosition") or []),
        "drafts": int(summary.get("drafts") or 0),
        "time": now,
    }
    if uri:
        out["uri"] = uri
    if k is not None:
        out["numSpeculativeTokens"] = k
    return out


def length_at(m: dict[str, Any], k: int) -> float:
    """Mean acceptance length at k <= the measured k, from the per-position rates (fair across k)."""
    per_position = m.get("perPosition") or []
    if per_position and k <= len(per_position):
        return acceptance_length_by_k(per_position[:k])[-1]
    return float(m.get("meanAcceptanceLength") or 1.0)


def _common_k(a: dict[str, Any], b: dict[str, Any]) -> int:
    ks = [len(m.get("perPosition") or []) or int(m.get("numSpeculativeTokens") or 0) for m in (a, b)]
    return max(1, min(ks))


def draft_status(draft: ResolvedDraft, **extra: Any) -> dict[str, Any]:
    """status.draft's shape (and the loop's records of drafts) for a draft as served."""
    out = {
        "uri": draft.source.uri,
        "method": draft.method,
        "numSpeculativeTokens": draft.num_speculative_tokens,
    }
    if draft.max_speculative_tokens:
        out["maxSpeculativeTokens"] = draft.max_speculative_tokens
    if draft.source.revision:
        out["revision"] = draft.source.revision
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def _training_message(training: dict[str, Any]) -> str:
    ready = find((training.get("status") or {}).get("conditions"), "Ready") or {}
    return str(ready.get("message") or "")


class _Loop:
    def __init__(
        self,
        ctx: SpeculatorContext,
        base: ResolvedDraft,
        previous: dict[str, Any],
        obs: LoopObserved,
        now: str,
    ) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.obs = obs
        self.now = now
        self.r: dict[str, Any] = dict(previous.get("retrain") or {})
        prev_canary = previous.get("canary")
        self.canary: dict[str, Any] | None = dict(prev_canary) if prev_canary else None
        self.previous_drafts = list(previous.get("previousDrafts") or [])
        self.served_status = previous.get("draft")
        self.out = LoopOutcome(stable=base)
        self.base = base

    # -- the draft the stable pods serve ------------------------------------------------------------

    def _stable(self) -> ResolvedDraft:
        promoted = self.r.get("promoted")
        if promoted and self.r.get("specDraft") != draft_identity(self.spec.draft):
            # The user named another draft: theirs is served, the loop starts over from it.
            for key in ("promoted", "specDraft", "replaced", "baseline"):
                self.r.pop(key, None)
            self.out.events.append(
                Event(
                    "Normal",
                    "SpecDraftChanged",
                    f"spec.draft changed: serving it instead of {promoted['uri']}",
                )
            )
            promoted = None
        if not promoted:
            return self.base
        k = self.spec.num_speculative_tokens or int(promoted.get("numSpeculativeTokens") or 0)
        limit = promoted.get("maxSpeculativeTokens")
        return ResolvedDraft(
            ModelSource(uri=promoted["uri"]),
            str(promoted.get("method") or self.base.method),
            k or 3,
            max_speculative_tokens=limit or None,
        )

    # -- canary -------------------------------------------------------------------------------------

    def _canary_ready(self) -> tuple[int, bool]:
        dep = self.obs.canary
        if dep is None or self.canary is None:
            return 0, False
        st = dep.get("status") or {}
        ready = int(st.get("readyReplicas") or 0)
        current = st.get("observedGeneration") == dep["metadata"].get("generation")
        want = int(self.canary.get("replicas") or 1)
        serves = served_draft(dep) == (self.canary.get("draft") or {}).get("uri")
        return ready, current and serves and ready >= want and int(st.get("updatedReplicas") or 0) >= want

    def _end_canary(self, phase: str, decision: str) -> None:
        assert self.canary is not None
        self.canary.update(phase=phase, decision=decision, decidedAt=self.now)
        training = str(self.canary.get("training") or "")
        result = "Promoted" if phase == "Promoting" else "RolledBack"
        self.r["lastResult"] = {"training": training, "result": result, "message": decision, "time": self.now}
        if phase == "Promoting":
            self.out.events.append(Event("Normal", "CanaryPromoted", decision))
        else:
            self.out.events.append(Event("Warning", "CanaryRolledBack", decision))

    def _promote(self, stable: ResolvedDraft, canary_m: dict[str, Any] | None) -> ResolvedDraft:
        assert self.canary is not None
        draft = dict(self.canary.get("draft") or {})
        old = self.served_status or draft_status(stable)
        if not self.r.get("promoted"):
            self.r["replaced"] = self.served_status or draft_status(stable)
        self.previous_drafts = [old, *[d for d in self.previous_drafts if d.get("uri") != old.get("uri")]]
        self.previous_drafts = self.previous_drafts[:MAX_PREVIOUS]
        self.r["promoted"] = {**draft, "training": self.canary.get("training"), "promotedAt": self.now}
        self.r["specDraft"] = draft_identity(self.spec.draft)
        if canary_m:
            self.r["baseline"] = canary_m  # the new draft's live measure is the next drift's base
        self.r["consecutiveFailures"] = 0
        return self._stable()

    def _run_canary(self, stable: ResolvedDraft) -> ResolvedDraft:
        canary = self.canary
        if canary is None:
            return stable
        phase = canary.get("phase")
        if phase not in ACTIVE:
            return stable
        spec = self.spec.canary
        draft = canary.get("draft") or {}
        k = stable.num_speculative_tokens
        canary_m = measure(self.obs.canary_acceptance, draft.get("uri"), k, self.now)
        stable_m = measure(self.obs.stable_acceptance, stable.source.uri, k, self.now)
        canary["replicas"] = self.ctx.canary_replicas()  # spec.canary may change while it runs
        ready, all_ready = self._canary_ready()
        canary["readyReplicas"] = ready
        if self.spec.retrain is None:
            self._end_canary("RolledBack", "spec.retrain was removed: the canary is stopped")
        elif self.obs.canary_refused and phase in ("Starting", "Running"):
            self._end_canary("RolledBack", f"CanaryUnsupported: {self.obs.canary_refused}")
        elif phase == "Starting":
            if all_ready:
                canary.update(phase="Running", startTime=self.now)
            elif _seconds(canary.get("createdTime"), self.now) >= spec.timeout_seconds:
                self._end_canary(
                    "RolledBack", f"InsufficientData: the canary was not ready within {spec.timeout_seconds}s"
                )
        elif phase == "Running":
            if canary_m:
                canary["acceptance"] = canary_m
            if stable_m:
                canary["stable"] = stable_m
            served = _seconds(canary.get("startTime"), self.now)
            enough = (
                canary_m is not None
                and stable_m is not None
                and canary_m["drafts"] >= spec.min_drafts
                and stable_m["drafts"] >= spec.min_drafts
            )
            if served >= spec.window_seconds and enough:
                assert canary_m is not None and stable_m is not None
                k_common = _common_k(canary_m, stable_m)
                new, old = length_at(canary_m, k_common), length_at(stable_m, k_common)
                gain = 100.0 * (new / old - 1.0) if old > 0 else 0.0
                numbers = (
                    f"canary {draft.get('uri')} mean acceptance length {new:.3f} vs stable {old:.3f} at "
                    f"k={k_common} ({gain:+.1f}%, {canary_m['drafts']} vs {stable_m['drafts']} drafts)"
                )
                if gain > spec.min_gain:
                    self._end_canary("Promoting", f"Better: {numbers}")
                    stable = self._promote(stable, canary_m)
                else:
                    self._end_canary(
                        "RolledBack", f"NotBetter: {numbers}; needs more than {spec.min_gain:g}%"
                    )
            elif _seconds(canary.get("createdTime"), self.now) >= spec.timeout_seconds:
                have = canary_m["drafts"] if canary_m else 0
                self._end_canary(
                    "RolledBack",
                    f"InsufficientData: {have} canary drafts in {spec.timeout_seconds}s, "
                    f"canary.minDrafts is {spec.min_drafts}",
                )
        elif phase == "Promoting":
            stable = self._stable()
            if self.obs.stable_uri == stable.source.uri and self.obs.stable_ready:
                canary["phase"] = "Promoted"
                self.r["servedUri"], self.r["servedSince"] = stable.source.uri, self.now
        return stable

    def _canary_workload(self, stable: ResolvedDraft) -> None:
        """Render the canary Deployment while the canary is active, else delete what is left of it (also
        after a restart)."""
        canary = self.canary
        if canary is not None and canary.get("phase") in ACTIVE:
            draft = canary["draft"]
            limit = draft.get("maxSpeculativeTokens")
            self.out.canary = ResolvedDraft(
                ModelSource(uri=draft["uri"]),
                str(draft.get("method") or stable.method),
                stable.num_speculative_tokens,
                schedule=stable.schedule,
                max_speculative_tokens=limit or None,
            )
        elif self.obs.canary is not None and self.obs.canary_owned:
            self.out.delete.append(self.obs.canary)

    # -- retrain ------------------------------------------------------------------------------------

    def _run_training(self, stable: ResolvedDraft) -> None:
        name = self.r.get("active")
        if not name:
            return
        training = self.obs.trainings.get(name)

        def done(result: str, message: str, *, failed: bool = False) -> None:
            self.r["active"] = None
            self.r["lastResult"] = {"training": name, "result": result, "message": message, "time": self.now}
            self.r["consecutiveFailures"] = int(self.r.get("consecutiveFailures") or 0) + 1 if failed else 0
            kind = "Warning" if failed else "Normal"
            self.out.events.append(Event(kind, f"Retrain{result}", f"{name}: {message}"))

        if training is None:
            done("TrainingDeleted", "the retrain training was deleted", failed=True)
            return
        if self.spec.retrain is None:
            # Switched off mid-training: no canary follows (the training itself is left to finish or go).
            done("Stopped", "spec.retrain was removed")
            return
        status = training.get("status") or {}
        phase = status.get("phase")
        if phase == "Failed":
            done("TrainingFailed", _training_message(training) or "the training failed", failed=True)
        elif phase == "Succeeded":
            promotion = status.get("promotion") or {}
            output = status.get("output") or {}
            if not promotion.get("promoted") or not output.get("uri"):
                reason = promotion.get("reason") or "NotPromoted"
                done("NotPromoted", f"{reason}: {promotion.get('message') or 'the gate kept it back'}")
                return
            self.r["active"] = None
            replicas = self.ctx.canary_replicas()
            # A published copy serves pods on any node; the workspace claim may be ReadWriteOnce.
            uri = (
                f"hf://{output['hubRepo']}" if output.get("hubRepo") else output.get("s3Uri") or output["uri"]
            )
            self.canary = {
                "phase": "Starting",
                "training": name,
                # Compared at the stable pods' k, within what one block of a DFlash draft proposes.
                "draft": draft_status(
                    ResolvedDraft(
                        ModelSource(uri=uri),
                        str(output.get("method") or stable.method),
                        stable.num_speculative_tokens,
                        max_speculative_tokens=output.get("maxSpeculativeTokens") or None,
                    )
                ),
                "deployment": self.ctx.canary_name,
                "replicas": replicas,
                "readyReplicas": 0,
                "createdTime": self.now,
            }
            self.out.events.append(
                Event(
                    "Normal",
                    "CanaryStarted",
                    f"{name} passed its gate ({promotion.get('message')}); serving {uri} on "
                    f"{replicas} canary pod(s) of {self.ctx.canary_name}",
                )
            )

    # -- drift --------------------------------------------------------------------------------------

    def _drift(self, stable: ResolvedDraft) -> Cond | None:
        retrain = self.spec.retrain
        if retrain is None:
            return None
        when = retrain.when
        uri = stable.source.uri
        if self.r.get("servedUri") != uri:
            self.r["servedUri"], self.r["servedSince"] = uri, self.now
            self.r.pop("belowSince", None)
        live = measure(self.obs.stable_acceptance, uri, stable.num_speculative_tokens, self.now)
        judged = (
            live is not None
            and live["drafts"] >= when.min_drafts
            and self.obs.stable_uri == uri
            and self.obs.stable_ready
        )
        window = self.spec.metrics.window_seconds
        baseline = self.r.get("baseline")
        if baseline is not None and baseline.get("uri") != uri:
            baseline = None
        if baseline is None and judged and _seconds(self.r.get("servedSince"), self.now) >= window:
            # A whole window of this draft alone: that is what "healthy" looks like for it.
            assert live is not None
            baseline = self.r["baseline"] = live
        if judged and _seconds(self.r.get("servedSince"), self.now) < window:
            # Right after a rollout the window still holds the previous draft's pods: not this draft's.
            return Cond(
                "Drifted",
                "Unknown",
                "Settling",
                f"the window covers this draft alone {window}s after it rolled out",
            )
        if not judged or live is None:
            # Not judged (no window yet, e.g. after an operator restart, or a rollout): belowSince stays.
            have = live["drafts"] if live else 0
            return Cond(
                "Drifted",
                "Unknown",
                "NotEnoughDrafts",
                f"{have} drafts in the window, retrain.when.minDrafts is {when.min_drafts}",
            )
        if when.mean_acceptance_length_below is not None:
            threshold, k = when.mean_acceptance_length_below, int(stable.num_speculative_tokens)
            value = float(live["meanAcceptanceLength"])
            bar = f"retrain.when.meanAcceptanceLengthBelow {threshold:g}"
        else:
            if baseline is None:
                self.r.pop("belowSince", None)
                return Cond(
                    "Drifted", "Unknown", "NoBaseline", f"the baseline is taken after {window}s of this draft"
                )
            assert when.drop_fraction is not None
            k = _common_k(live, baseline)
            base = length_at(baseline, k)
            threshold = base * (1.0 - when.drop_fraction)
            value = length_at(live, k)
            bar = f"{(1 - when.drop_fraction):.0%} of the baseline {base:.3f}"
        if value >= threshold:
            self.r.pop("belowSince", None)
            return Cond(
                "Drifted",
                "False",
                "Healthy",
                f"mean acceptance length {value:.3f} at k={k}, bar {threshold:.3f}",
            )
        since = self.r.setdefault("belowSince", self.now)
        below = f"mean acceptance length {value:.3f} at k={k} is below {bar} ({threshold:.3f}) since {since}"
        if _seconds(since, self.now) < when.for_seconds:
            return Cond("Drifted", "True", "BelowThreshold", f"{below}; retrain after {when.for_seconds}s")
        if self.r.get("active") or (self.canary and self.canary.get("phase") in ACTIVE):
            return Cond("Drifted", "True", "Drifted", f"{below}; a retrain is under way")
        wait = self._cooldown_left()
        if wait > 0:
            return Cond("Drifted", "True", "CoolingDown", f"{below}; next retrain in {wait:.0f}s")
        self._start_retrain(stable, live, threshold, below)
        return Cond("Drifted", "True", "Drifted", f"{below}; retraining as {self.r['active']}")

    def _cooldown_left(self) -> float:
        retrain = self.spec.retrain
        assert retrain is not None
        last = self.r.get("lastTriggerTime")
        if not last:
            return 0.0
        factor = min(MAX_BACKOFF, 2 ** int(self.r.get("consecutiveFailures") or 0))
        return retrain.cooldown_seconds * factor - _seconds(last, self.now)

    def _start_retrain(
        self, stable: ResolvedDraft, live: dict[str, Any], threshold: float, below: str
    ) -> None:
        n = int(self.r.get("count") or 0) + 1
        name = render_retrain.retrain_name(self.ctx.name, n)
        self.out.create.append(render_retrain.retrain_training(self.ctx, name, stable.source.uri))
        self.r.update(
            active=name,
            count=n,
            trigger=live,
            threshold=round(threshold, 4),
            lastTriggerTime=self.now,
        )
        self.r.pop("belowSince", None)
        self.out.events.append(Event("Warning", "Drifted", below))
        self.out.events.append(Event("Normal", "RetrainStarted", f"created SpeculatorTraining {name}"))

    # -- conditions ---------------------------------------------------------------------------------

    def _retraining_cond(self) -> Cond | None:
        if self.spec.retrain is None and not self.r:
            return None
        active = self.r.get("active")
        if active:
            training = self.obs.trainings.get(active) or {}
            phase = (training.get("status") or {}).get("phase") or "Pending"
            return Cond("Retraining", "True", "Training", f"SpeculatorTraining {active} is {phase}")
        if self.canary and self.canary.get("phase") in ACTIVE:
            return Cond("Retraining", "True", "Canary", f"{self.canary.get('training')}'s draft is on canary")
        last = self.r.get("lastResult")
        if last:
            return Cond(
                "Retraining", "False", str(last["result"]), f"{last['training']}: {last.get('message', '')}"
            )
        return Cond("Retraining", "False", "Idle", "no retrain yet")

    def _canary_cond(self) -> Cond | None:
        canary = self.canary
        if canary is None:
            return None
        phase = canary.get("phase")
        if phase == "Promoted" or phase == "Promoting":
            status = "True" if phase == "Promoted" else "Unknown"
            return Cond("CanaryPromoted", status, phase, str(canary.get("decision") or ""))
        if phase == "RolledBack":
            return Cond("CanaryPromoted", "False", "RolledBack", str(canary.get("decision") or ""))
        m = canary.get("acceptance") or {}
        detail = (
            f", mean acceptance length {m['meanAcceptanceLength']} over {m['drafts']} drafts" if m else ""
        )
        ready = f"{canary.get('readyReplicas', 0)}/{canary.get('replicas', 0)} ready"
        return Cond("CanaryPromoted", "Unknown", str(phase), f"{canary.get('deployment')}: {ready}{detail}")

    def run(self) -> LoopOutcome:
        stable = self._stable()
        stable = self._run_canary(stable)
        self._run_training(stable)  # may start a canary: rendered in the same pass
        self._canary_workload(stable)
        drift = self._drift(stable)
        self.out.stable = stable
        self.out.retrain = self.r or None
        self.out.canary_status = self.canary
        self.out.previous_drafts = self.previous_drafts
        self.out.conditions = [x for x in (drift, self._retraining_cond(), self._canary_cond()) if x]
        return self.out


def run_loop(
    ctx: SpeculatorContext, base: ResolvedDraft, previous: dict[str, Any], obs: LoopObserved, now: str
) -> LoopOutcome:
    """One pass of the loop (a no-op that serves `base` when there is no retrain state or spec)."""
    if ctx.spec.retrain is None and not previous.get("retrain") and not previous.get("canary"):
        return LoopOutcome(stable=base)
    return _Loop(ctx, base, previous, obs, now).run()


__all__ = ["LoopObserved", "LoopOutcome", "draft_identity", "run_loop", "served_draft"]
