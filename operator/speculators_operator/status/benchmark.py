"""SpeculatorBenchmark: from the Speculator, the baseline and the benchmark Job to children and status.

The run goes WaitingForSpeculator (until the Speculator is Ready and serves a draft) -> StartingBaseline
(the temporary baseline comes up) -> Running (the Job measures both servers) -> Succeeded or Failed. A
finished benchmark keeps its status (the numbers come from the Job's termination message, and the Job
goes by TTL) and has no baseline any more: it is deleted as soon as the Job ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from speculators_core.bench.speedup import COLUMNS
from speculators_operator.api.common import ModelSource
from speculators_operator.render import benchmark as render
from speculators_operator.render import speculator as rs
from speculators_operator.render.common import Images
from speculators_operator.status.conditions import Cond, aggregate, find, merge, now_iso
from speculators_operator.status.jobs import observe_job
from speculators_operator.status.plan import Plan, phase_events

TERMINAL = ("Succeeded", "Failed")


@dataclass
class BenchmarkObserved:
    speculator: dict[str, Any] | None = None
    deployment: dict[str, Any] | None = None  # the baseline's, when ours
    service: dict[str, Any] | None = None
    job: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
    results_pvc: dict[str, Any] | None = None


def _speculator_ready(speculator: dict[str, Any] | None, name: str) -> Cond:
    if speculator is None:
        return Cond("SpeculatorReady", "Unknown", "SpeculatorNotFound", f"waiting for Speculator {name}")
    status = speculator.get("status") or {}
    ready = find(status.get("conditions"), "Ready") or {}
    if ready.get("status") != "True":
        detail = ready.get("message") or ready.get("reason") or "not reconciled yet"
        return Cond("SpeculatorReady", "Unknown", "SpeculatorNotReady", f"Speculator {name}: {detail}")
    if not (status.get("draft") or {}).get("uri"):
        return Cond(
            "SpeculatorReady", "Unknown", "SpeculatorNotReady", f"Speculator {name} serves no draft yet"
        )
    return Cond("SpeculatorReady", "True", "Ready", f"Speculator {name} serves {status['draft']['uri']}")


def _baseline_ready(dep: dict[str, Any] | None, name: str) -> Cond:
    if dep is None:
        return Cond("BaselineReady", "Unknown", "Creating", f"creating Deployment {name}")
    status = dep.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("status") == "False":
            return Cond("BaselineReady", "False", "BaselineFailed", f"{name}: {cond.get('message', '')}")
    generation = dep["metadata"].get("generation")
    current = status.get("observedGeneration") == generation
    if current and (status.get("readyReplicas") or 0) >= 1 and (status.get("updatedReplicas") or 0) >= 1:
        return Cond("BaselineReady", "True", "Ready", f"Deployment {name} is ready")
    return Cond(
        "BaselineReady", "Unknown", "Starting", f"Deployment {name} is starting (loading the verifier)"
    )


def _named(row: list[Any]) -> dict[str, Any]:
    """One compact row of the Job's summary (speedup.COLUMNS) as a status.rates item."""
    out: dict[str, Any] = {"baseline": {}, "speculator": {}}
    for key, value in zip(COLUMNS, row, strict=False):
        if value is None:
            continue
        side, _, name = key.rpartition(".")
        (out[side] if side else out)[name] = value
    return out


def results_status(summary: dict[str, Any], speculator: dict[str, Any] | None) -> dict[str, Any]:
    """status fields from the report container's summary; acceptance falls back to the Speculator's live
    window when the run could not read vLLM's counters itself."""
    columns = summary.get("columns")
    rows = summary.get("rates") if columns == list(COLUMNS) else None
    out: dict[str, Any] = {
        "rates": [_named(row) for row in rows or [] if isinstance(row, list)][:30],
        "breakeven": summary.get("breakeven"),
        "speedupAtLowestRate": summary.get("speedupAtLowestRate"),
        "breakevenRate": summary.get("breakevenRate"),
    }
    accepted = summary.get("acceptance")
    live = ((speculator or {}).get("status") or {}).get("acceptance") or {}
    if isinstance(accepted, dict) and accepted.get("perPosition"):
        out["acceptance"] = {**accepted, "source": "benchmark"}
    elif live.get("perPosition"):
        out["acceptance"] = {
            "meanAcceptanceLength": live.get("meanAcceptanceLength"),
            "perPosition": live["perPosition"],
            "source": "speculator",
        }
    return {k: v for k, v in out.items() if v is not None}


def _served_draft(speculator: dict[str, Any]) -> rs.ResolvedDraft:
    draft = (speculator.get("status") or {}).get("draft") or {}
    return rs.ResolvedDraft(
        ModelSource(uri=draft["uri"]), draft.get("method") or "eagle3", draft.get("numSpeculativeTokens") or 1
    )


def _finish(plan: Plan, observed: BenchmarkObserved) -> None:
    """A finished run keeps no baseline."""
    plan.delete += [obj for obj in (observed.deployment, observed.service) if obj is not None]


def derive_benchmark(body: dict[str, Any], observed: BenchmarkObserved, images: Images) -> Plan:
    ctx = render.BenchmarkContext.of(body, images)
    spec = ctx.spec
    previous = body.get("status") or {}
    generation = body["metadata"].get("generation")
    now = now_iso()
    status: dict[str, Any] = dict(previous)
    status["observedGeneration"] = generation
    plan = Plan(status=status)
    if previous.get("phase") in TERMINAL:
        _finish(plan, observed)
        return plan

    pvc = render.results_pvc(ctx)
    if pvc is not None and observed.results_pvc is None:
        plan.create.append(pvc)
    status["results"] = {"uri": ctx.results_uri}
    name = spec.speculator_ref.name
    speculator = observed.speculator
    conds: list[Cond] = []
    job = observed.job

    if job is None:
        spec_cond = _speculator_ready(speculator, name)
    else:
        spec_cond = Cond("SpeculatorReady", "True", "Measured", f"the Job measures Speculator {name}")
    conds.append(spec_cond)
    phase = "Pending"
    bench_cond = Cond("Benchmarked", "Unknown", "Waiting", "waiting for both servers")
    base_cond = Cond("BaselineReady", "Unknown", "Waiting", "waiting for the Speculator")
    if spec_cond.status != "True":
        phase = "WaitingForSpeculator"
    else:
        assert speculator is not None or job is not None
        # The Speculator parsed once: its port, URL, served name and spec all come from it.
        spec_ctx = rs.SpeculatorContext.of(speculator, images) if speculator is not None else None
        if speculator is not None and spec_ctx is not None:
            port = spec_ctx.spec.vllm.port
            status["speculatorUrl"] = rs.service_url(spec_ctx)
            status["draft"] = ((speculator.get("status") or {}).get("draft") or {}).get("uri")
            status["baselineUrl"] = ctx.baseline_url(port)
            if spec.baseline.create:
                plan.apply += [
                    render.baseline_deployment(ctx, speculator, _served_draft(speculator)),
                    render.baseline_service(ctx, port),
                ]
        if spec.baseline.create:
            base_cond = _baseline_ready(observed.deployment, ctx.baseline_name)
        else:
            base_cond = Cond("BaselineReady", "True", "External", f"baseline {spec.baseline.url}")
        if job is None:
            if base_cond.status == "True" and spec_ctx is not None:
                plan.create.append(
                    render.benchmark_job(
                        ctx,
                        spec_ctx.spec,
                        speculator_url=status["speculatorUrl"],
                        baseline_url=status["baselineUrl"],
                        model=spec_ctx.served_model_name,
                    )
                )
                phase = "Running"
                bench_cond = Cond("Benchmarked", "Unknown", "Running", f"created Job {ctx.job_name}")
            elif base_cond.status == "False":
                phase = "Failed"
                bench_cond = Cond("Benchmarked", "False", "BaselineFailed", base_cond.message)
                _finish(plan, observed)
                plan.apply = []
            else:
                phase = "StartingBaseline"
        else:
            obs = observe_job(job, observed.pods)
            status["startTime"] = obs.start_time or status.get("startTime")
            if obs.state == "Succeeded":
                summaries = obs.summaries("report")
                if summaries:
                    status.update(results_status(summaries[-1], speculator))
                    status["results"]["report"] = f"{ctx.results_uri}/report.html"
                    phase = "Succeeded"
                    bench_cond = Cond("Benchmarked", "True", "Succeeded", _headline(status))
                else:
                    phase = "Failed"
                    bench_cond = Cond(
                        "Benchmarked", "False", "NoSummary", "the report container left no summary"
                    )
            elif obs.state == "Failed":
                phase = "Failed"
                bench_cond = Cond("Benchmarked", "False", "BenchmarkFailed", obs.failure_text() or obs.reason)
            else:
                phase = "Running"
                detail = obs.pending_reason or f"Job {ctx.job_name} measures both servers"
                bench_cond = Cond("Benchmarked", "Unknown", "Running", detail)
            if phase in TERMINAL:
                status["completionTime"] = obs.completion_time or now
                if spec.baseline.create:
                    base_cond = Cond("BaselineReady", "True", "Deleted", "deleted when the run ended")
                _finish(plan, observed)
                plan.apply = []
    conds += [base_cond, bench_cond]
    ready = aggregate(conds, ready_reason="Succeeded", ready_message=bench_cond.message)
    if phase == "Failed" and ready.status != "False":
        ready = Cond("Ready", "False", bench_cond.reason, bench_cond.message)
    status["conditions"] = merge(previous.get("conditions"), [*conds, ready], generation, now)
    status["phase"] = phase
    plan.events += phase_events(
        "SpeculatorBenchmark", previous.get("phase"), phase, bench_cond.message, failed=phase == "Failed"
    )
    return plan


def _headline(status: dict[str, Any]) -> str:
    lowest = status.get("speedupAtLowestRate")
    parts = [f"speed-up {lowest:.2f}x at the lowest rate" if lowest is not None else "no common rate"]
    if status.get("breakeven") == "crossed" and status.get("breakevenRate") is not None:
        parts.append(f"stops paying above {status['breakevenRate']:.3g} req/s")
    elif status.get("breakeven") == "beyond-measured":
        parts.append("faster at every rate measured")
    return ", ".join(parts)
