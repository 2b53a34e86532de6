"""Speculator: from the referenced training, the resolve Job, the Deployment and the scrapes to status.

Order of business: know the draft (trainingRef -> the training's output; URI with method/k unset ->
the resolve Job), then render the Deployment and Service, then report their health and the acceptance.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from speculators_core.vllm_metrics.acceptance import same_values
from speculators_operator import constants as c
from speculators_operator.api.common import ModelSource
from speculators_operator.metrics.store import AcceptanceState
from speculators_operator.render import kserve as render_kserve
from speculators_operator.render import llmisvc as render_llmisvc
from speculators_operator.render import route as render_route
from speculators_operator.render import speculator as render
from speculators_operator.render.common import queue_name
from speculators_operator.status import kserve as kserve_status
from speculators_operator.status import llmisvc as llmisvc_status
from speculators_operator.status import queue
from speculators_operator.status import retrain as loop
from speculators_operator.status import route as route_status
from speculators_operator.status import tuning as auto_k
from speculators_operator.status.conditions import Cond, aggregate, find, merge, now_iso, parse_time
from speculators_operator.status.jobs import observe_job, parse_summary
from speculators_operator.status.plan import Event, Plan, phase_events

KSERVE_MISSING = "KServeNotInstalled"
# status.acceptance follows the live window at most once per window, and at least every this many scrapes.
REFRESH_SCRAPES = 10

# Pod waiting reasons that mean "broken", not "starting".
BAD_WAITING = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}

# Legacy speculators `eagle` format (EAGLE-1/HASS): we load and train it; vLLM 0.33 does not serve it.
LEGACY_EAGLE = (
    "the draft is in the legacy speculators EAGLE-1/HASS format, which vLLM 0.33 cannot serve; "
    "train or convert an eagle3 draft"
)


@dataclass
class SpeculatorObserved:
    training: dict[str, Any] | None = None  # the referenced SpeculatorTraining
    resolve_job: dict[str, Any] | None = None
    resolve_pods: list[dict[str, Any]] = field(default_factory=list)
    deployment: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    cache: dict[str, Any] | None = None  # the cache PVC, when the operator creates it
    pods: list[dict[str, Any]] = field(default_factory=list)  # vLLM pods
    acceptance: AcceptanceState | None = None
    # backend kserve (and a Deployment/Service left from backend deployment, or the reverse)
    kserve_served: bool = False  # the cluster serves serving.kserve.io InferenceService (discovery)
    inference_service: dict[str, Any] | None = None
    serving_runtime: dict[str, Any] | None = None
    kserve_predictor: dict[str, Any] | None = None  # KServe's Deployment <name>-predictor
    kserve_canary: dict[str, Any] | None = None  # KServe's Deployment <name>-canary-predictor
    # backend llmisvc
    llmisvc_served: bool = False  # the cluster serves serving.kserve.io/v1alpha2 LLMInferenceService
    llm_inference_service: dict[str, Any] | None = None
    llmisvc_workload: dict[str, Any] | None = None  # KServe's Deployment <name>-kserve
    # spec.route
    routes_served: bool = False  # the cluster serves route.openshift.io Route (discovery)
    route: dict[str, Any] | None = None
    # spec.traffic and spec.retrain
    capture_pvc: dict[str, Any] | None = None
    retrains: dict[str, dict[str, Any]] = field(default_factory=dict)  # SpeculatorTrainings we own, by name
    canary: dict[str, Any] | None = None  # Deployment <name>-vllm-canary
    canary_acceptance: AcceptanceState | None = None  # the canary pods' window


def _hub_id(uri: str | None) -> str | None:
    """org/name of an hf:// URI or a bare hub id (a draft config's verifier.name_or_path); None otherwise."""
    if not uri:
        return None
    if uri.startswith("hf://"):
        return uri[len("hf://") :].split("?", 1)[0].lower()
    if "://" in uri or uri.startswith(("/", ".")) or uri.count("/") != 1:
        return None  # a local path or another scheme: nothing to compare
    return uri.lower()


def verifier_mismatch(served: str, trained_for: str | None) -> str | None:
    """Why a draft does not belong to the served verifier, when both are hub models and differ."""
    a, b = _hub_id(served), _hub_id(trained_for)
    if a is None or b is None or a == b:
        return None
    want = "hf://" + str(trained_for).removeprefix("hf://")
    return (
        f"the draft was trained for verifier {want}, the Speculator serves {served}: its hidden "
        f"states and vocabulary do not match; set spec.verifier.uri to {want} or use a draft trained for "
        "this verifier"
    )


def _draft_from_training(
    ctx: render.SpeculatorContext, training: dict[str, Any] | None
) -> tuple[Cond, render.ResolvedDraft | None]:
    ref = ctx.spec.draft.training_ref
    assert ref is not None
    if training is None:
        return Cond(
            "TrainingReady", "Unknown", "TrainingNotFound", f"SpeculatorTraining {ref.name} not found"
        ), None
    status = training.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase == "Failed":
        ready = find(status.get("conditions"), "Ready") or {}
        message = ready.get("message") or "training failed"
        return Cond("TrainingReady", "False", "TrainingFailed", f"{ref.name}: {message}"), None
    output = status.get("output") or {}
    if phase != "Succeeded" or not output.get("uri"):
        return Cond("TrainingReady", "Unknown", "TrainingInProgress", f"{ref.name} is {phase}"), None
    tspec = training.get("spec") or {}
    if tspec.get("algorithm") == "eagle":
        return Cond("TrainingReady", "False", "DraftNotServable", f"{ref.name}: {LEGACY_EAGLE}"), None
    trained_for = (tspec.get("verifier") or {}).get("uri")
    mismatch = verifier_mismatch(ctx.spec.verifier.uri, trained_for)
    if mismatch:
        return Cond("TrainingReady", "False", "VerifierMismatch", f"{ref.name}: {mismatch}"), None
    method = ctx.spec.method or output.get("method") or "eagle3"
    k = ctx.spec.num_speculative_tokens or output.get("numSpeculativeTokens") or 3
    limit = output.get("maxSpeculativeTokens")
    draft = render.ResolvedDraft(
        ModelSource(uri=output["uri"]), method, int(k), max_speculative_tokens=limit if limit else None
    )
    return Cond("TrainingReady", "True", "Succeeded", f"draft {output['uri']}"), draft


def _resolved_from_status(ctx: render.SpeculatorContext, previous: dict[str, Any]) -> dict[str, Any] | None:
    """A resolution recorded earlier for the same draft (the resolve Job may be gone by TTL)."""
    retrain = previous.get("retrain") or {}
    # While a promoted retrained draft is served, status.draft is that one; spec.draft's is kept aside.
    draft = (retrain.get("replaced") if retrain.get("promoted") else None) or previous.get("draft") or {}
    spec_draft = ctx.spec.draft
    if draft.get("uri") != spec_draft.uri or draft.get("revision") != spec_draft.revision:
        return None
    if not draft.get("method") or not draft.get("numSpeculativeTokens"):
        return None
    return draft


def _resolve(
    ctx: render.SpeculatorContext, observed: SpeculatorObserved, previous: dict[str, Any], plan: Plan
) -> tuple[Cond, render.ResolvedDraft | None]:
    source = render.draft_source(ctx)
    assert source is not None
    spec = ctx.spec
    if not render.needs_resolve(ctx):
        assert spec.method and spec.num_speculative_tokens
        return (
            Cond("DraftResolved", "True", "Specified", "method and numSpeculativeTokens set in spec"),
            render.ResolvedDraft(source, spec.method, spec.num_speculative_tokens),
        )
    known = _resolved_from_status(ctx, previous)
    resolved: dict[str, Any] | None = None
    if known:
        resolved = {"method": known["method"], "speculative_tokens": known["numSpeculativeTokens"]}
        if known.get("maxSpeculativeTokens"):
            resolved["max_speculative_tokens"] = known["maxSpeculativeTokens"]
    job = observed.resolve_job
    name = f"{ctx.name}-resolve"
    if resolved is None:
        want = render.resolve_hash(ctx)
        if job is None:
            plan.create.append(render.resolve_job(ctx))
            plan.events.append(
                Event("Normal", "JobCreated", f"created Job {name} to read the draft's config")
            )
            return Cond("DraftResolved", "Unknown", "Resolving", f"Job {name} reads the draft's config"), None
        obs = observe_job(job, observed.resolve_pods)
        if obs.hash != want or obs.deleting:
            if not obs.deleting:
                plan.delete.append(job)
            return Cond(
                "DraftResolved", "Unknown", "Resolving", f"replacing Job {name} (draft changed)"
            ), None
        if obs.state == "Failed":
            return Cond(
                "DraftResolved", "False", "ResolveFailed", obs.failure_text() or f"Job {name} failed"
            ), None
        if obs.state != "Succeeded":
            detail = obs.pending_reason or f"Job {name} is {obs.state.lower()}"
            return Cond("DraftResolved", "Unknown", "Resolving", detail), None
        messages = [r.message for r in obs.results if r.container == "inspect" and r.exit_code == 0]
        resolved = parse_summary(messages[-1]) if messages else None
        if not resolved:
            return Cond(
                "DraftResolved", "False", "InvalidDraftConfig", "speculators inspect returned no JSON"
            ), None
        if "vllm_serve" in resolved and not resolved["vllm_serve"]:
            note = resolved.get("vllm_serve_note") or LEGACY_EAGLE
            return Cond("DraftResolved", "False", "DraftNotServable", str(note)), None
        mismatch = verifier_mismatch(spec.verifier.uri, resolved.get("verifier"))
        if mismatch:
            return Cond("DraftResolved", "False", "VerifierMismatch", mismatch), None
    method = spec.method or resolved.get("method") or resolved.get("algorithm")
    k = spec.num_speculative_tokens or resolved.get("speculative_tokens")
    if method not in ("eagle3", "eagle", "peagle", "dflash", "dspark"):
        return Cond(
            "DraftResolved", "False", "UnsupportedMethod", f"draft method {method!r} cannot be served"
        ), None
    if not isinstance(k, int) or not 1 <= k <= 16:
        return Cond(
            "DraftResolved", "False", "InvalidDraftConfig", f"draft speculative_tokens {k!r} is not 1-16"
        ), None
    limit = resolved.get("max_speculative_tokens")
    if isinstance(limit, int) and k > limit:
        # A DFlash block drafts block_size - 1 tokens (block_size with sample_from_anchor): no more.
        return Cond(
            "DraftResolved",
            "False",
            "TooManySpeculativeTokens",
            f"numSpeculativeTokens {k} exceeds the {limit} tokens one block of the draft drafts (block_size "
            f"{resolved.get('block_size')}); set spec.numSpeculativeTokens to {limit} or less",
        ), None
    return (
        Cond("DraftResolved", "True", "Resolved", f"method {method}, k={k} from the draft's config"),
        render.ResolvedDraft(
            source, method, k, max_speculative_tokens=limit if isinstance(limit, int) else None
        ),
    )


def _pod_failure(observed: SpeculatorObserved) -> Cond | None:
    """A vLLM pod whose (init) container is stuck in a broken state, whatever the backend."""
    for pod in observed.pods:
        status = pod.get("status") or {}
        for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in BAD_WAITING:
                pod_name = pod["metadata"]["name"]
                detail = f"{waiting['reason']} {waiting.get('message', '')}"
                text = f"pod {pod_name} container {cs.get('name')}: {detail}"
                return Cond("DeploymentReady", "False", waiting["reason"], text.strip())
    return None


def _pod_counts(pods: list[dict[str, Any]]) -> tuple[int, int]:
    """(pods, ready pods) of the vLLM pods KServe runs (no Deployment status of ours to read)."""
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    ready = [
        p
        for p in live
        if (find((p.get("status") or {}).get("conditions"), "Ready") or {}).get("status") == "True"
    ]
    return len(live), len(ready)


def _rolled_out(dep: dict[str, Any] | None) -> bool:
    """A Deployment (KServe's) whose pods all run its current template and are ready."""
    if dep is None:
        return False
    st = dep.get("status") or {}
    want = int((dep.get("spec") or {}).get("replicas", 1))
    return (
        st.get("observedGeneration") == dep["metadata"].get("generation")
        and (st.get("updatedReplicas") or 0) >= want
        and (st.get("readyReplicas") or 0) >= want
        and (st.get("replicas") or 0) == want
    )


def _deployment_condition(
    ctx: render.SpeculatorContext, observed: SpeculatorObserved, draft_uri: str | None = None
) -> Cond:
    dep = observed.deployment
    name = ctx.deployment_name
    if dep is None:
        return Cond("DeploymentReady", "Unknown", "Creating", f"creating Deployment {name}")
    serving = (dep["metadata"].get("annotations") or {}).get(c.ANNOTATION_DRAFT)
    if draft_uri is not None and serving != draft_uri:
        # Observed before this reconcile's apply: the Deployment still runs the previous draft, however
        # available it looks; Ready must not speak for the new draft yet.
        return Cond("DeploymentReady", "Unknown", "Progressing", f"rolling Deployment {name} to {draft_uri}")
    failure = _pod_failure(observed)
    if failure is not None:
        return failure
    gated = queue.gated_pods(observed.pods)
    if gated:
        lq = queue_name(ctx.spec.scheduling)
        text = f"{len(gated)} pod(s) wait for Kueue to admit them (LocalQueue {lq}): {', '.join(gated)}"
        return Cond("DeploymentReady", "Unknown", "Queued", text)
    st = dep.get("status") or {}
    for cond in st.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return Cond("DeploymentReady", "False", "ProgressDeadlineExceeded", cond.get("message", ""))
    want = ctx.spec.replicas
    generation = dep["metadata"].get("generation")
    current = st.get("observedGeneration") == generation
    updated, ready = st.get("updatedReplicas") or 0, st.get("readyReplicas") or 0
    total = st.get("replicas") or 0
    if current and want == 0 and total == 0:
        return Cond("DeploymentReady", "True", "ScaledToZero", "replicas is 0")
    if current and updated >= want and ready >= want and total == want:
        return Cond("DeploymentReady", "True", "Available", f"{ready}/{want} replicas ready")
    return Cond(
        "DeploymentReady", "Unknown", "Progressing", f"{ready}/{want} replicas ready, {updated} updated"
    )


# One failed scrape or query (a timeout under load, a pod restarting) is not reported: the condition would
# flap, and every flap is a status write per Speculator; two in a row are.
SCRAPE_FAILURES_REPORTED = 2


def _metrics(
    ctx: render.SpeculatorContext, observed: SpeculatorObserved, previous: dict[str, Any], now: str
) -> tuple[Cond, dict[str, Any] | None]:
    prev_acc = previous.get("acceptance")
    spec = ctx.spec.metrics
    if not spec.enabled:
        return Cond("MetricsAvailable", "False", "Disabled", "spec.metrics.enabled is false"), prev_acc
    state = observed.acceptance
    if state is None or state.scraped_at is None:
        return Cond("MetricsAvailable", "Unknown", "Waiting", "no scrape yet"), prev_acc
    acceptance = prev_acc
    # No pod contributed yet (a new process's first scrape of pods that started before the window): nothing
    # was measured, so the last measured values stay rather than blanking the columns.
    measured = state.summary is not None and (bool(state.summary.get("pods")) or not prev_acc)
    if state.summary is not None and measured:
        if same_values(prev_acc, state.summary):
            acceptance = prev_acc  # unchanged after rounding: no status write
        elif _recent(
            prev_acc, state.summary, now, min(spec.window_seconds, REFRESH_SCRAPES * spec.interval_seconds)
        ):
            # At most one write per window (or per REFRESH_SCRAPES scrapes): the numbers move slowly.
            acceptance = prev_acc
        else:
            acceptance = {**state.summary, "lastScrapeTime": now_iso_from(state.scraped_at, now)}
    if state.failed_in_a_row >= SCRAPE_FAILURES_REPORTED:
        return Cond("MetricsAvailable", "False", "ScrapeFailed", "; ".join(state.errors)[:1024]), acceptance
    if state.source == "pods" and state.targets == 0:
        return Cond("MetricsAvailable", "False", "NoReadyPods", "no ready vLLM pod to scrape"), acceptance
    if state.summary is None or not measured:
        return Cond("MetricsAvailable", "Unknown", "Waiting", "waiting for a second scrape"), acceptance
    if not state.summary.get("drafts"):
        return Cond("MetricsAvailable", "False", "NoTraffic", "no drafts in the window"), acceptance
    # The numbers of the written status.acceptance: live ones in the message would rewrite status each scrape.
    shown = acceptance or state.summary
    rate = shown.get("acceptanceRate")
    length = shown.get("meanAcceptanceLength")
    return Cond(
        "MetricsAvailable", "True", "Scraped", f"acceptance rate {rate}, mean length {length}"
    ), acceptance


def scrape_changes_status(
    ctx: render.SpeculatorContext, state: AcceptanceState, now: str | None = None
) -> bool:
    """Whether a fresh scrape could change what a reconcile would write (pure): the scrape loop reconciles
    only then, so a fleet at steady traffic costs no reads of children per scrape. Automatic k, a retrain
    bar and a running canary decide on every live window, so they always reconcile; otherwise only the
    metrics condition and status.acceptance follow a scrape, and they are computed here as reconcile does."""
    status = ctx.body.get("status") or {}
    if (
        ctx.spec.tuning.mode == "auto"
        or ctx.spec.retrain is not None
        or (status.get("canary") or {}).get("phase") in loop.ACTIVE
    ):
        return True
    cond, acceptance = _metrics(ctx, SpeculatorObserved(acceptance=state), status, now or now_iso())
    current = find(status.get("conditions"), "MetricsAvailable") or {}
    same = (current.get("status"), current.get("reason"), current.get("message")) == (
        cond.status,
        cond.reason,
        cond.message,
    )
    return not same or acceptance != status.get("acceptance")


def _recent(prev: dict[str, Any] | None, summary: dict[str, Any], now: str, period: float) -> bool:
    """status.acceptance was written less than `period` ago, for the same shape of traffic (drafting or
    idle, the same k): keep it, a fleet's status writes stay at one per Speculator per window. Decisions
    (drift, canary, automatic k) read the live window, never this copy."""
    if not prev:
        return False
    written, current = parse_time(prev.get("lastScrapeTime")), parse_time(now)
    if written is None or current is None or current - written >= period:
        return False
    same_shape = bool(prev.get("drafts")) == bool(summary.get("drafts")) and len(
        prev.get("perPosition") or []
    ) == len(summary.get("perPosition") or [])
    return same_shape


def now_iso_from(epoch: float, fallback: str) -> str:
    try:
        return now_iso(datetime.fromtimestamp(epoch, UTC))
    except (OverflowError, OSError, ValueError):
        return fallback


def _stale_children(ctx: render.SpeculatorContext, observed: SpeculatorObserved) -> list[dict[str, Any]]:
    """What another backend left (the backend was switched)."""
    children = {
        "deployment": [observed.deployment, observed.canary, observed.service],
        "kserve": [observed.inference_service, observed.serving_runtime],
        "llmisvc": [observed.llm_inference_service],
    }
    return [obj for backend, objs in children.items() if backend != ctx.spec.backend for obj in objs if obj]


def _missing_api(ctx: render.SpeculatorContext, observed: SpeculatorObserved) -> Cond | None:
    """The backend's KServe kind is not served by this cluster (discovery)."""
    if ctx.kserve and not observed.kserve_served:
        what = "serving.kserve.io/v1beta1 InferenceService"
    elif ctx.llmisvc and not observed.llmisvc_served:
        what = "serving.kserve.io/v1alpha2 LLMInferenceService (KServe >= 0.16 with llm-d)"
    else:
        return None
    return Cond(
        "DeploymentReady",
        "False",
        KSERVE_MISSING,
        f"backend {ctx.spec.backend} needs KServe: the cluster does not serve {what}",
    )


def _rolling(ctx: render.SpeculatorContext, cond: Cond, workload: dict[str, Any] | None, uri: str) -> Cond:
    """Ready from before this apply while KServe's Deployment still serves the previous draft: rolling."""
    if cond.status == "True" and loop.served_draft(workload) not in (None, uri):
        return Cond("DeploymentReady", "Unknown", "Progressing", f"KServe rolls {ctx.workload_name} to {uri}")
    return cond


def _serve_deployment(
    ctx: render.SpeculatorContext,
    observed: SpeculatorObserved,
    draft: render.ResolvedDraft,
    canary: render.ResolvedDraft | None,
    plan: Plan,
) -> Cond:
    capture = render.capture_pvc(ctx)
    if capture and observed.capture_pvc is None:
        plan.create.append(capture)
    plan.apply.append(render.deployment(ctx, draft))
    if canary is not None:
        plan.apply.append(render.deployment(ctx, canary, canary=True))
    plan.apply.append(render.service(ctx))
    return _deployment_condition(ctx, observed, draft.source.uri)


def _serve_kserve(
    ctx: render.SpeculatorContext,
    observed: SpeculatorObserved,
    draft: render.ResolvedDraft,
    canary: render.ResolvedDraft | None,
    plan: Plan,
) -> Cond:
    plan.apply.append(render_kserve.serving_runtime(ctx, draft))
    plan.apply.append(render_kserve.inference_service(ctx, draft, canary))
    cond = kserve_status.deployment_condition(ctx, observed.inference_service, _pod_failure(observed))
    return _rolling(ctx, cond, observed.kserve_predictor, draft.source.uri)


def _serve_llmisvc(
    ctx: render.SpeculatorContext,
    observed: SpeculatorObserved,
    draft: render.ResolvedDraft,
    canary: render.ResolvedDraft | None,
    plan: Plan,
) -> Cond:
    assert canary is None  # admission: no retrain on llmisvc
    plan.apply.append(render_llmisvc.llm_inference_service(ctx, draft))
    cond = llmisvc_status.deployment_condition(ctx, observed.llm_inference_service, _pod_failure(observed))
    return _rolling(ctx, cond, observed.llmisvc_workload, draft.source.uri)


def derive_speculator(
    body: dict[str, Any], observed: SpeculatorObserved, images: Any = None, now: str | None = None
) -> Plan:
    """Next status and actions of a Speculator (pure)."""
    now = now or now_iso()
    ctx = render.SpeculatorContext.of(body, images)
    spec = ctx.spec
    generation = body["metadata"].get("generation")
    previous: dict[str, Any] = dict(body.get("status") or {})
    plan = Plan(status={})
    conds: list[Cond] = []

    training_cond: Cond | None = None
    draft: render.ResolvedDraft | None = None
    if spec.draft.training_ref is not None:
        training_cond, draft = _draft_from_training(ctx, observed.training)
        conds.append(training_cond)
        if draft is not None:
            draft_cond = Cond(
                "DraftResolved",
                "True",
                "FromTraining",
                f"method {draft.method}, k={draft.num_speculative_tokens}",
            )
        else:
            draft_cond = Cond("DraftResolved", "Unknown", "WaitingForTraining", training_cond.message)
    else:
        draft_cond, draft = _resolve(ctx, observed, previous, plan)
    conds.append(draft_cond)

    # The closed loop (spec.retrain): which draft the stable pods serve, and the canary's.
    outcome: loop.LoopOutcome | None = None
    if draft is not None:
        stable_state = observed.acceptance
        canary_state = observed.canary_acceptance
        if ctx.kserve:
            stable_dep, canary_dep = observed.kserve_predictor, observed.kserve_canary
            stable_ready = kserve_status.deployment_condition(
                ctx, observed.inference_service, None
            ).status == "True" and _rolled_out(stable_dep)
        elif ctx.llmisvc:
            stable_dep, canary_dep = observed.llmisvc_workload, None
            stable_ready = llmisvc_status.deployment_condition(
                ctx, observed.llm_inference_service, None
            ).status == "True" and _rolled_out(stable_dep)
        else:
            stable_dep, canary_dep = observed.deployment, observed.canary
            stable_ready = _deployment_condition(ctx, observed).status == "True"
        refused = None
        if ctx.kserve and render_kserve.canary_pruned(observed.inference_service):
            refused = (
                "this KServe's InferenceService has no spec.canary (KServe 0.20 added it): the API server "
                "dropped the canary; upgrade KServe or use backend deployment"
            )
        outcome = loop.run_loop(
            ctx,
            draft,
            previous,
            loop.LoopObserved(
                trainings=observed.retrains,
                canary=canary_dep,
                canary_acceptance=canary_state.summary if canary_state is not None else None,
                stable_acceptance=stable_state.summary if stable_state is not None else None,
                stable_uri=loop.served_draft(stable_dep),
                stable_ready=stable_ready,
                canary_owned=not ctx.kserve,
                canary_refused=refused,
            ),
            now,
        )
        draft = outcome.stable
        plan.create += outcome.create
        plan.delete += outcome.delete
        plan.events += outcome.events

    tuning: auto_k.Tuning | None = None
    if draft is not None and spec.tuning.mode == "auto":
        state = observed.acceptance
        tuning = auto_k.tune(
            spec,
            draft.source.uri,
            draft.num_speculative_tokens,
            previous.get("tuning"),
            state.measures if state is not None else None,
            observed.training,
            now,
            window_seconds=spec.metrics.window_seconds,
            method=draft.method,
            k_limit=draft.max_speculative_tokens,
        )
        draft = replace(draft, num_speculative_tokens=tuning.k, schedule=tuning.schedule)
        plan.events += tuning.events

    kserve = spec.backend == "kserve"
    # Children of the other backends (the backend was switched): deleted, not left running on GPUs.
    plan.delete += _stale_children(ctx, observed)
    missing = _missing_api(ctx, observed)
    if missing is not None:
        deploy_cond = missing
    elif draft is None:
        what = {"kserve": "InferenceService", "llmisvc": "LLMInferenceService"}.get(
            spec.backend, "Deployment"
        )
        deploy_cond = Cond(
            "DeploymentReady",
            "Unknown",
            "WaitingForDraft",
            f"the {what} is created once the draft is known",
        )
    else:
        pvc = render.cache_pvc(ctx)
        if pvc and observed.cache is None:
            plan.create.append(pvc)
        canary = None
        if outcome is not None and outcome.canary is not None:
            # The canary drafts exactly as the stable pods do (k, schedule): only the draft differs.
            canary = replace(
                outcome.canary,
                num_speculative_tokens=draft.num_speculative_tokens,
                schedule=draft.schedule,
            )
        serve = {"kserve": _serve_kserve, "llmisvc": _serve_llmisvc}.get(spec.backend, _serve_deployment)
        deploy_cond = serve(ctx, observed, draft, canary, plan)
    conds.append(deploy_cond)

    route_cond: Cond | None = None
    if spec.route.enabled:
        if observed.routes_served and draft is not None and deploy_cond.reason != KSERVE_MISSING:
            split = render_kserve.canary_traffic_percent(ctx) if kserve and canary is not None else None
            plan.apply.append(render_route.route(ctx, split))
        route_cond = route_status.route_condition(
            observed.route, served=observed.routes_served, name=ctx.name
        )
    elif observed.route is not None:
        plan.delete.append(observed.route)  # spec.route was switched off
    url = route_status.public_url(observed.route) if spec.route.enabled else None
    if url is None:
        if kserve:
            url = kserve_status.url(observed.inference_service)
        elif ctx.llmisvc:
            url = llmisvc_status.url(observed.llm_inference_service)
        elif observed.service is not None:
            url = render.service_url(ctx)

    ready = aggregate(
        conds, ready_reason="Running", ready_message=f"serving at {url or render.service_url(ctx)}"
    )
    metrics_cond, acceptance = _metrics(ctx, observed, previous, now)

    status: dict[str, Any] = {"observedGeneration": generation}
    if (
        (training_cond and training_cond.status == "False")
        or draft_cond.status == "False"
        or deploy_cond.reason == KSERVE_MISSING
    ):
        phase = "Failed"
    elif training_cond and draft is None:
        phase = "WaitingForTraining"
    elif draft is None:
        phase = "ResolvingDraft"
    elif deploy_cond.status == "True":
        phase = "Running"
    elif deploy_cond.status == "False":
        phase = "Degraded"
    else:
        phase = "Deploying"
    status["phase"] = phase
    extra = [route_cond] if route_cond else []
    if outcome is not None:
        extra[:0] = outcome.conditions
    if tuning is not None and tuning.condition is not None:
        extra.insert(0, tuning.condition)
    status["conditions"] = merge(
        previous.get("conditions"), [*conds, metrics_cond, *extra, ready], generation, now
    )
    status["selector"] = render.selector_string(ctx)
    if kserve or ctx.llmisvc:  # no Deployment status of ours: count KServe's pods (not the canary's)
        stable_pods = [p for p in observed.pods if c.LABEL_TRACK not in (p["metadata"].get("labels") or {})]
        total, ready_pods = _pod_counts(stable_pods)
        status["replicas"], status["readyReplicas"], status["updatedReplicas"] = total, ready_pods, total
    else:
        dep_status = (observed.deployment or {}).get("status") or {}
        status["replicas"] = dep_status.get("replicas") or 0
        status["readyReplicas"] = dep_status.get("readyReplicas") or 0
        status["updatedReplicas"] = dep_status.get("updatedReplicas") or 0
    if url is not None:
        status["url"] = url
    if draft is not None:
        status["draft"] = loop.draft_status(draft)
        promoted = ((outcome.retrain if outcome else None) or {}).get("promoted") or {}
        if promoted.get("uri") == draft.source.uri:
            status["draft"]["training"] = promoted.get("training")
            status["draft"]["promotedAt"] = promoted.get("promotedAt")
    elif previous.get("draft") and spec.draft.uri is not None:
        status["draft"] = previous["draft"]
    if acceptance is not None:
        status["acceptance"] = acceptance
    if tuning is not None and tuning.status is not None:
        status["tuning"] = tuning.status
    if outcome is not None:
        for key, value in (
            ("retrain", outcome.retrain),
            ("canary", outcome.canary_status),
            ("previousDrafts", outcome.previous_drafts),
        ):
            if value:
                status[key] = value
    else:
        for key in (
            "retrain",
            "canary",
            "previousDrafts",
        ):  # the draft is not known (yet): keep the loop's state
            if previous.get(key):
                status[key] = previous[key]

    failed = phase in ("Failed", "Degraded")
    plan.events += phase_events("speculator", previous.get("phase"), phase, ready.message, failed=failed)
    plan.status = status
    return plan
