"""SpeculatorTraining: from the observed Jobs/pods and the previous status to the next status and actions.

Steps run one after another; each step's Job is tied to a hash of its inputs. A step finished with the
current hash stays finished even after its Job's TTL removed it (status.steps remembers it); a failed step
is not retried by re-creating its Job (the Job's own backoff did the retrying) until its inputs change, or
until the annotation speculators.ai/retry gets a value not yet acted on (status.retryToken): then the failed
step's Job is replaced once, and the step resumes from its checkpoints and finished shards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from speculators_operator import constants as c
from speculators_operator.api.training import resolved_k
from speculators_operator.render import common as render_common
from speculators_operator.render import training as render
from speculators_operator.status import promotion as gate
from speculators_operator.status.conditions import Cond, aggregate, find, merge, now_iso
from speculators_operator.status.jobs import JobObservation, observe_step
from speculators_operator.status.plan import Event, Plan, phase_events
from speculators_operator.status.queue import not_installed_message

PHASE_OF_STEP = {
    "prepare": "PreparingData",
    "datagen": "GeneratingHiddenStates",
    "train": "Training",
    "eval": "Evaluating",
    "publish": "Publishing",
}
CONDITION_OF_STEP = {
    "prepare": "DataPrepared",
    "datagen": "HiddenStatesGenerated",
    "train": "Trained",
    "eval": "Evaluated",
    "publish": "Published",
}
FAILED_REASON_OF_STEP = {
    "prepare": "PrepareFailed",
    "datagen": "DatagenFailed",
    "train": "TrainingFailed",
    "eval": "EvaluationFailed",
    "publish": "PublishFailed",
}
# Share of the whole pipeline each step stands for (progress.percent).
WEIGHT = {"prepare": 10, "datagen": 30, "train": 45, "eval": 10, "publish": 5}


@dataclass
class TrainingObserved:
    """What the handler read from the API server for one training."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # by step
    pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by Job name
    speculator: dict[str, Any] | None = None  # the spec.deploy child, when this training controls it
    workspace: dict[str, Any] | None = None  # the workspace PVC, when the operator creates it
    # The Speculator spec.deploy names, whoever controls it, and the trainings behind it (not this one):
    deploy_target: dict[str, Any] | None = None
    target_training: dict[str, Any] | None = None  # the training whose draft the target serves now
    retrain_of: dict[str, Any] | None = None  # the Speculator that started this training (its retrain)
    target_controller: dict[str, Any] | None = None  # the training controlling the target
    queue: dict[str, dict[str, Any]] = field(default_factory=dict)  # Kueue Workloads, by Job name
    kueue_installed: bool = True  # False: a step waits for a Kueue the cluster does not have


def _f(value: Any) -> float | None:
    return round(float(value), 4) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _floats(values: Any) -> list[float]:
    return [
        round(float(v), 4) for v in values or [] if isinstance(v, int | float) and not isinstance(v, bool)
    ]


def _step_message(step: str, obs: JobObservation, shards: int) -> str:
    """One line summarising a finished (or running) step from its summaries."""
    sums = obs.summaries()
    if step == "prepare" and sums:
        s = sums[-1]
        samples, tokens, heldout = (s.get(k, "?") for k in ("samples", "tokens", "heldout"))
        return f"{samples} samples, {tokens} tokens, {heldout} held out"
    if step == "datagen":
        return f"{min(obs.succeeded, shards)}/{shards} shards"
    if step == "train" and sums:
        s = sums[-1]
        parts = []
        if _f(s.get("loss")) is not None:
            parts.append(f"loss {_f(s.get('loss'))}")
        if _f(s.get("est_accept_len")) is not None:
            parts.append(f"estimated acceptance length {_f(s.get('est_accept_len'))}")
        return ", ".join(parts)
    if step == "eval" and sums:
        s = sums[-1]
        return f"mean acceptance length {_f(s.get('mean_accept_len'))} at k={s.get('k')}"
    if step == "publish" and sums:
        return "published to " + ", ".join(str(s.get("uri")) for s in sums if s.get("uri"))
    return ""


def _merge_step(
    record: dict[str, Any] | None, step: str, job: str, step_hash: str, obs: JobObservation, shards: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": step, "jobName": job, "state": obs.state, "hash": step_hash}
    same = record is not None and record.get("hash") == step_hash
    out["attempts"] = max(obs.attempts, record.get("attempts", 0) if same and record else 0)
    start = obs.start_time or (record.get("startTime") if same and record else None)
    if start:
        out["startTime"] = start
    if obs.state in ("Succeeded", "Failed") and obs.completion_time:
        out["completionTime"] = obs.completion_time
    if obs.state == "Failed":
        out["message"] = obs.failure_text()
    elif obs.state in ("Pending", "Queued") and obs.pending_reason:
        out["message"] = obs.pending_reason
    else:
        message = _step_message(step, obs, shards)
        if message:
            out["message"] = message
    return out


def derive_training(
    body: dict[str, Any], observed: TrainingObserved, images: Any = None, now: str | None = None
) -> Plan:
    """Next status and actions of a SpeculatorTraining (pure)."""
    now = now or now_iso()
    ctx = render.TrainingContext.of(body, images)
    spec = ctx.spec
    generation = body["metadata"].get("generation")
    previous: dict[str, Any] = dict(body.get("status") or {})
    prev_steps = {s.get("name"): s for s in previous.get("steps") or []}
    hashes = render.step_hashes(ctx)
    steps = render.steps_for(spec)
    shards = spec.datagen.shards

    plan = Plan(status={})
    pvc = render.workspace_pvc(ctx)
    if pvc and observed.workspace is None:
        plan.create.append(pvc)
    svc = render.train_service(ctx)
    if svc:
        plan.apply.append(svc)

    token = (body["metadata"].get("annotations") or {}).get(c.ANNOTATION_RETRY)
    retry = token is not None and token != previous.get("retryToken")
    records: list[dict[str, Any]] = []
    current: tuple[str, JobObservation | None] | None = None
    failed: tuple[str, str] | None = None
    done: dict[str, JobObservation | None] = {}
    for step in steps:
        step_hash = hashes[step]
        name = render.job_name(ctx.name, step)
        job = observed.jobs.get(step)
        record = prev_steps.get(step)
        if job is not None:
            obs = observe_step(job, observed.pods.get(name, []), observed.queue.get(name))
            if obs.state == "Queued" and not observed.kueue_installed:
                obs.pending_reason = not_installed_message(job)
            retry_failed = retry and obs.state == "Failed"
            if obs.hash != step_hash or obs.deleting or retry_failed:
                # Inputs changed, a retry was asked for, or a replacement is under way: the old Job goes,
                # a new one follows once its name is free.
                why = f"{c.ANNOTATION_RETRY}={token}" if retry_failed else "inputs changed"
                if not obs.deleting:
                    plan.delete.append(job)
                    reason = "Retrying" if retry_failed else "InputsChanged"
                    plan.events.append(Event("Normal", reason, f"replacing Job {name}: {why}"))
                records.append(
                    {
                        "name": step,
                        "jobName": name,
                        "state": "Pending",
                        "hash": step_hash,
                        "message": f"replacing Job {name} ({why})"
                        if not obs.deleting
                        else f"replacing Job {name}",
                    }
                )
                current = (step, None)
                break
            merged = _merge_step(record, step, name, step_hash, obs, shards)
            records.append(merged)
            if obs.state == "Succeeded":
                done[step] = obs
                continue
            if obs.state == "Failed":
                failed = (step, merged.get("message") or f"Job {name} failed")
                break
            current = (step, obs)
            break
        finished = (
            record and record.get("hash") == step_hash and record.get("state") in ("Succeeded", "Failed")
        )
        if finished and not (retry and record["state"] == "Failed"):
            records.append(record)  # remembered after the Job's TTL removed it
            if record["state"] == "Succeeded":
                done[step] = None
                continue
            failed = (step, record.get("message") or f"Job {name} failed")
            break
        plan.create.append(render.step_job(ctx, step, step_hash))
        why = f" ({c.ANNOTATION_RETRY}={token})" if finished else ""
        plan.events.append(
            Event("Normal", "Retrying" if finished else "JobCreated", f"created Job {name}{why}")
        )
        records.append({"name": step, "jobName": name, "state": "Pending", "hash": step_hash, "attempts": 0})
        current = (step, None)
        break

    status: dict[str, Any] = {"observedGeneration": generation}
    status["steps"] = records
    if token is not None or previous.get("retryToken"):
        # A token is acted on once: by the reconcile that first sees it (a no-op when nothing had failed).
        status["retryToken"] = token if token is not None else previous.get("retryToken")
    status["startTime"] = previous.get("startTime") or now

    # Results: fresh from the Jobs when they are still there, else what the previous status copied.
    prev_train_ok = _still_valid(prev_steps, "train", hashes)
    prev_eval_ok = _still_valid(prev_steps, "eval", hashes)
    metrics = previous.get("metrics") if prev_train_ok else None
    evaluation = previous.get("evaluation") if prev_eval_ok else None
    output = dict(previous.get("output") or {}) if prev_train_ok else {}
    if done.get("train") is not None:
        metrics = _train_metrics(done["train"]) or metrics
    if done.get("eval") is not None:
        evaluation = _evaluation(done["eval"]) or evaluation
    if "train" in done:
        output.update(
            uri=ctx.artifact_uri,
            method=spec.algorithm,
            numSpeculativeTokens=resolved_k(spec),
        )
        if spec.algorithm == "dflash":
            output["maxSpeculativeTokens"] = spec.training.dflash.block_size - 1
    else:
        output = {}
    if done.get("publish") is not None:
        for summary in done["publish"].summaries():
            uri = str(summary.get("uri") or "")
            if uri.startswith("s3://"):
                output["s3Uri"] = uri
            elif uri.startswith("hf://"):
                output["hubRepo"] = uri.removeprefix("hf://")
    elif "publish" not in done:
        output.pop("s3Uri", None)
        output.pop("hubRepo", None)
    if metrics:
        status["metrics"] = metrics
    if evaluation:
        status["evaluation"] = evaluation
    if output:
        status["output"] = output

    # Progress.
    total = sum(WEIGHT[s] for s in steps)
    percent = sum(WEIGHT[s] for s in steps if s in done)
    progress: dict[str, Any] = {}
    if spec.training.mode == "offline":
        if "datagen" in done:
            completed = shards
        elif current and current[0] == "datagen" and current[1] is not None:
            completed = min(current[1].succeeded, shards)
            percent += WEIGHT["datagen"] * completed / shards
        else:
            completed = 0
        progress.update(completedShards=completed, totalShards=shards)
    progress["percent"] = min(100, round(100 * percent / total))
    status["progress"] = progress

    # The promotion gate: decided once per evaluation, then kept (see status/promotion.py).
    decision = _promotion(ctx, observed, previous, hashes, evaluation, "eval" in done, now)
    if decision is not None:
        status["promotion"] = decision
        if (previous.get("promotion") or {}).get("decidedAt") != decision.get("decidedAt"):
            kind = "Normal" if decision["promoted"] else "Warning"
            reason = "Promoted" if decision["promoted"] else "NotPromoted"
            plan.events.append(Event(kind, reason, f"{decision['reason']}: {decision['message']}"))
    promoted = bool(decision and decision.get("promoted"))

    # Phase and conditions.
    all_done = failed is None and current is None
    deploy_cond: Cond | None = None
    if spec.deploy is not None:
        deploy_cond = _deployed(ctx, observed, all_done, decision)
        if all_done and promoted and deploy_cond.reason != SUPERSEDED:
            child = render.deploy_speculator(ctx)
            assert child
            plan.apply.append(child)
            status["speculatorRef"] = {"name": child["metadata"]["name"]}
        elif previous.get("speculatorRef") and deploy_cond.reason == SUPERSEDED:
            status["speculatorRef"] = previous["speculatorRef"]
    if failed:
        phase = "Failed"
    elif current:
        step, obs = current
        phase = PHASE_OF_STEP[step]
        if obs is not None and obs.state == "Queued":
            phase = "Queued"  # any step: Kueue holds it back for quota
        elif step == steps[0] and (obs is None or obs.state == "Pending"):
            phase = "Pending"
    else:
        phase = "Succeeded"
    status["phase"] = phase
    if phase in ("Succeeded", "Failed"):
        kept = previous.get("completionTime") if previous.get("phase") == phase else None
        status["completionTime"] = kept or now

    step_conds = _step_conditions(spec, steps, records, done, current, failed)
    deployed = [deploy_cond] if deploy_cond else []
    # Promoted and a deploy the gate held back (or a newer draft took over) do not gate Ready: a training
    # whose draft was not worth serving still did its job (Argo CD: Healthy, with the message).
    gating = [*step_conds, *(d for d in deployed if d.reason not in (NOT_PROMOTED, SUPERSEDED))]
    ready = aggregate(gating, ready_reason="Succeeded", ready_message=_ready_message(status))
    if ready.status == "True" and decision is not None and not promoted:
        ready = Cond("Ready", "True", "Succeeded", f"{ready.message}; not promoted: {decision['message']}")
    conds = [*step_conds, gate.condition(decision, "eval" in done), *deployed]
    if failed:
        ready = Cond("Ready", "False", FAILED_REASON_OF_STEP[failed[0]], failed[1])
    status["conditions"] = merge(previous.get("conditions"), [*conds, ready], generation, now)

    message = ""
    if failed:
        message = f"step {failed[0]} failed: {failed[1]}"
    elif current:
        message = f"running step {current[0]} (Job {render.job_name(ctx.name, current[0])})"
    elif phase == "Succeeded":
        message = f"draft trained: {ctx.artifact_uri}"
    plan.events += phase_events("training", previous.get("phase"), phase, message, failed=bool(failed))
    plan.status = status
    return plan


NOT_PROMOTED = "NotPromoted"
SUPERSEDED = "Superseded"


def _promotion(
    ctx: render.TrainingContext,
    observed: TrainingObserved,
    previous: dict[str, Any],
    hashes: dict[str, str],
    evaluation: dict[str, Any] | None,
    evaluated: bool,
    now: str,
) -> dict[str, Any] | None:
    """status.promotion: the decision made for this evaluation, or a new one once it has finished."""
    # Decided once per evaluation and gate: a new evaluation, or new thresholds, decide again.
    key = render_common.spec_hash({"eval": hashes["eval"], "promotion": ctx.spec.promotion.wire()})
    kept = previous.get("promotion") or {}
    if kept and kept.get("evalHash") == key:
        return kept
    if not evaluated:
        return None
    spec = ctx.spec
    # A retrain is judged against its own Speculator; a deploy against the Speculator it would update.
    target = observed.retrain_of if observed.retrain_of is not None else observed.deploy_target
    serving = gate.serving_measure(
        target, observed.target_training, ctx.artifact_uri, spec.promotion.min_live_drafts
    )
    has_target = (spec.deploy is not None or observed.retrain_of is not None) and target is not None
    decision = gate.decide(spec.promotion, evaluation, serving, has_target=has_target)
    return {**decision, "decidedAt": now, "evalHash": key}


def _still_valid(prev_steps: dict[str, dict[str, Any]], step: str, hashes: dict[str, str]) -> bool:
    record = prev_steps.get(step)
    return bool(record and record.get("hash") == hashes.get(step) and record.get("state") == "Succeeded")


def _train_metrics(obs: JobObservation) -> dict[str, Any] | None:
    sums = [s for s in obs.summaries() if s.get("step", "train") == "train"]
    if not sums:
        return None
    s = sums[0]  # rank 0 / index 0 speaks for a multi-node run
    out: dict[str, Any] = {"accuracy": _floats(s.get("acc"))}
    for key, src in (
        ("loss", "loss"),
        ("estimatedAcceptanceLength", "est_accept_len"),
        ("tokensPerSecond", "tokens_per_s"),
    ):
        if _f(s.get(src)) is not None:
            out[key] = _f(s.get(src))
    return out


def _evaluation(obs: JobObservation) -> dict[str, Any] | None:
    sums = obs.summaries()
    if not sums:
        return None
    s = sums[-1]
    out: dict[str, Any] = {"perPositionAcceptance": _floats(s.get("per_pos"))}
    if isinstance(s.get("k"), int):
        out["numSpeculativeTokens"] = s["k"]
    for key, src in (
        ("meanAcceptanceLength", "mean_accept_len"),
        ("expectedSpeedup", "speedup"),
        ("draftCostRatio", "draft_cost_ratio"),
    ):
        if _f(s.get(src)) is not None:
            out[key] = _f(s.get(src)) if key != "draftCostRatio" else round(float(s[src]), 6)
    for key, src in (
        ("conditionalAcceptance", "cond_per_pos"),
        ("acceptanceLengthByK", "accept_len_by_k"),
        ("speedupByK", "speedup_by_k"),
    ):
        if s.get(src):
            out[key] = _floats(s.get(src))
    prompt_set = s.get("prompt_set")
    if isinstance(prompt_set, dict) and isinstance(prompt_set.get("sha256"), str):
        out["promptSet"] = prompt_set["sha256"][:64]
    if isinstance(s.get("samples"), int):
        out["samples"] = s["samples"]
    if _f(s.get("temperature")) is not None:
        out["temperature"] = _f(s.get("temperature"))
    return out


def _step_conditions(
    spec: Any,
    steps: list[str],
    records: list[dict[str, Any]],
    done: dict[str, Any],
    current: tuple[str, JobObservation | None] | None,
    failed: tuple[str, str] | None,
) -> list[Cond]:
    by_step = {r["name"]: r for r in records}
    conds: list[Cond] = []
    for step in ("prepare", "datagen", "train", "eval", "publish"):
        ctype = CONDITION_OF_STEP[step]
        if step == "datagen" and spec.training.mode == "online":
            conds.append(Cond(ctype, "True", "Skipped", "online training computes hidden states itself"))
            continue
        if step not in steps:
            continue  # publish without s3/hub
        record = by_step.get(step) or {}
        message = record.get("message", "")
        if step in done:
            conds.append(Cond(ctype, "True", "Succeeded", message))
        elif failed and failed[0] == step:
            conds.append(Cond(ctype, "False", FAILED_REASON_OF_STEP[step], failed[1]))
        elif current and current[0] == step:
            obs = current[1]
            state = obs.state if obs else "Pending"
            job = record.get("jobName", "")
            detail = message or (f"Job {job} is {state.lower()}" if job else "")
            conds.append(Cond(ctype, "Unknown", state, detail))
        elif failed:
            conds.append(Cond(ctype, "Unknown", "NotRun", f"not run: step {failed[0]} failed"))
        else:
            previous_step = steps[steps.index(step) - 1]
            conds.append(Cond(ctype, "Unknown", "Waiting", f"waits for step {previous_step}"))
    return conds


def _superseded_by(ctx: render.TrainingContext, observed: TrainingObserved, decided: str) -> str | None:
    """The training that took the deploy target over with a newer promotion, if any."""
    target, controller = observed.deploy_target, observed.target_controller
    if target is None or controller is None or observed.speculator is not None:
        return None
    theirs = gate.decision_time(controller)
    name = controller["metadata"]["name"]
    # Newer decision wins; equal times (seconds) go to the later name, so exactly one side yields.
    return name if (theirs, name) > (decided, ctx.name) else None


def _deployed(
    ctx: render.TrainingContext, observed: TrainingObserved, all_done: bool, decision: dict[str, Any] | None
) -> Cond:
    name = render.deploy_name(ctx)
    if not all_done:
        return Cond("Deployed", "Unknown", "Waiting", f"Speculator {name} is created when training succeeds")
    if decision is None:
        return Cond("Deployed", "Unknown", "Waiting", "waits for the promotion gate")
    if not decision.get("promoted"):
        serving = ""
        if observed.deploy_target is not None and observed.speculator is None:
            serving = f"; Speculator {name} keeps serving its current draft"
        return Cond("Deployed", "False", NOT_PROMOTED, f"not deployed: {decision.get('message')}{serving}")
    other = _superseded_by(ctx, observed, str(decision.get("decidedAt") or ""))
    if other is not None:
        return Cond("Deployed", "False", SUPERSEDED, f"Speculator {name} now serves the draft of {other}")
    child = observed.speculator
    if child is None:
        return Cond("Deployed", "Unknown", "Creating", f"creating Speculator {name}")
    child_status = child.get("status") or {}
    ready = find(child_status.get("conditions"), "Ready")
    if ready is None:
        return Cond("Deployed", "Unknown", "Deploying", f"Speculator {name} has no status yet")
    # Its Ready speaks for this draft only once it has reconciled the spec we applied and serves our draft
    # (a Speculator taken over from another training is Ready with the old draft until it has rolled).
    current = child_status.get("observedGeneration") == child["metadata"].get("generation")
    serving = (child_status.get("draft") or {}).get("uri")
    if not current or serving != ctx.artifact_uri:
        return Cond("Deployed", "Unknown", "Deploying", f"Speculator {name} is rolling to this draft")
    status = ready.get("status", "Unknown")
    reason = "Ready" if status == "True" else ready.get("reason") or "Deploying"
    message = f"Speculator {name}: {ready.get('message') or reason}"
    return Cond("Deployed", status, reason, message)


def _ready_message(status: dict[str, Any]) -> str:
    output = status.get("output") or {}
    return f"draft at {output.get('uri')}" if output.get("uri") else ""


__all__ = ["TrainingObserved", "derive_training"]
