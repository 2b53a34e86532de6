"""What a Job and its pods say: state, attempts, times, and the CLI's summaries (termination messages)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from speculators_operator import constants as c
from speculators_operator.status import queue

# Queued: suspended for Kueue, which has not admitted it yet (a Pending that waits for quota, not pods).
JobState = Literal["Pending", "Queued", "Running", "Succeeded", "Failed"]
MESSAGE_LIMIT = 1024


@dataclass
class ContainerResult:
    pod: str
    container: str
    index: int | None
    exit_code: int | None
    message: str
    summary: dict[str, Any] | None


@dataclass
class JobObservation:
    name: str
    hash: str | None
    state: JobState
    deleting: bool = False
    active: int = 0
    ready: int = 0
    succeeded: int = 0
    failed: int = 0
    start_time: str | None = None
    completion_time: str | None = None
    reason: str = ""
    message: str = ""
    results: list[ContainerResult] = field(default_factory=list)
    pending_reason: str = ""

    @property
    def attempts(self) -> int:
        """Pods started: retries + 1 (per Job, so an Indexed Job counts each shard's first try once)."""
        return self.failed + (1 if self.active or self.succeeded else 0)

    def summaries(self, container: str | None = None) -> list[dict[str, Any]]:
        """Parsed summaries of containers that exited 0, by completion index (latest attempt wins)."""
        by_key: dict[tuple[int | None, str], dict[str, Any]] = {}
        for res in self.results:
            if (
                res.exit_code == 0
                and res.summary is not None
                and (container is None or res.container == container)
            ):
                by_key[(res.index, res.container)] = res.summary
        return [by_key[k] for k in sorted(by_key, key=lambda k: (k[0] if k[0] is not None else -1, k[1]))]

    def failure_text(self) -> str:
        """The most useful explanation of a failure: the failed container's own words, else the Job's."""
        for res in reversed(self.results):
            if res.exit_code not in (None, 0) and res.message.strip():
                return _clip(f"{res.container} exited with code {res.exit_code}: {res.message.strip()}")
        for res in reversed(self.results):
            if res.exit_code not in (None, 0):
                return f"{res.container} exited with code {res.exit_code}"
        return _clip(self.message)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def parse_summary(message: str | None) -> dict[str, Any] | None:
    """A termination message holding the CLI's summary JSON (None for plain text or logs)."""
    if not message:
        return None
    text = message.strip()
    try:
        value = json.loads(text)
    except ValueError:
        # FallbackToLogsOnError may leave log lines before the JSON; try the last line.
        try:
            value = json.loads(text.splitlines()[-1])
        except (ValueError, IndexError):
            return None
    return value if isinstance(value, dict) else None


def _condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond
    return None


def _pod_index(pod: dict[str, Any]) -> int | None:
    meta = pod.get("metadata") or {}
    value = (meta.get("annotations") or {}).get(c.JOB_COMPLETION_INDEX_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _pod_results(pod: dict[str, Any]) -> list[ContainerResult]:
    status = pod.get("status") or {}
    out = []
    index = _pod_index(pod)
    name = (pod.get("metadata") or {}).get("name", "")
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        state = cs.get("state") or {}
        term = state.get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if not term:
            continue
        message = term.get("message") or ""
        out.append(
            ContainerResult(
                pod=name,
                container=cs.get("name", ""),
                index=index,
                exit_code=term.get("exitCode"),
                message=message,
                summary=parse_summary(message),
            )
        )
    return out


def _pending_reason(pods: list[dict[str, Any]]) -> str:
    """Why pods do not run yet: unschedulable, image pull errors, bad config."""
    for pod in pods:
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason"):
                return _clip(f"{cond['reason']}: {cond.get('message', '')}")
        for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
                return _clip(f"{waiting['reason']}: {waiting.get('message', '')}")
    return ""


def _creation_order(pod: dict[str, Any]) -> str:
    return (pod.get("metadata") or {}).get("creationTimestamp") or ""


def _state(
    done: dict[str, Any] | None, failed: dict[str, Any] | None, counts: tuple[int, int, int], pods: list[Any]
) -> JobState:
    """Succeeded/Failed from the terminal condition; Running once any pod is ready, finished or running."""
    if done:
        return "Succeeded"
    if failed:
        return "Failed"
    if any(counts) or any((p.get("status") or {}).get("phase") == "Running" for p in pods):
        return "Running"
    return "Pending"


def _queued(
    obj: dict[str, Any], state: JobState, pending: str, workload: dict[str, Any] | None
) -> tuple[JobState, str]:
    """Queued, with Kueue's reason, while Kueue holds a suspended workload back."""
    if state == "Pending" and queue.held_by_kueue(obj):
        return "Queued", _clip(queue.waiting_message(obj, workload))
    return state, pending


def observe_job(
    job: dict[str, Any], pods: list[dict[str, Any]], workload: dict[str, Any] | None = None
) -> JobObservation:
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    done = _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet")
    failed = _condition(job, "Failed") or _condition(job, "FailureTarget")
    ready = status.get("ready") or 0
    active = status.get("active") or 0
    counts = (ready, status.get("succeeded") or 0, status.get("failed") or 0)
    state = _state(done, failed, counts, pods)
    state, pending = _queued(job, state, _pending_reason(pods) if state == "Pending" else "", workload)
    terminal = done or failed or {}
    results = []
    for pod in sorted(pods, key=_creation_order):
        results += _pod_results(pod)
    return JobObservation(
        name=meta.get("name", ""),
        hash=(meta.get("annotations") or {}).get(c.ANNOTATION_SPEC_HASH),
        state=state,
        deleting=bool(meta.get("deletionTimestamp")),
        active=active,
        ready=ready,
        succeeded=status.get("succeeded") or 0,
        failed=status.get("failed") or 0,
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime")
        or (terminal.get("lastTransitionTime") if failed else None),
        reason=terminal.get("reason", ""),
        message=terminal.get("message", ""),
        results=results,
        pending_reason=pending,
    )


def observe_trainjob(
    trainjob: dict[str, Any], pods: list[dict[str, Any]], workload: dict[str, Any] | None = None
) -> JobObservation:
    """A Kubeflow Trainer TrainJob as a step: Complete/Failed conditions (their reason and message are its
    JobSet's), jobsStatus for the counts, its pods' termination messages for the summaries."""
    meta = trainjob.get("metadata") or {}
    status = trainjob.get("status") or {}
    done = _condition(trainjob, "Complete")
    failed = _condition(trainjob, "Failed")
    counts = {key: 0 for key in ("active", "ready", "succeeded", "failed")}
    for job in status.get("jobsStatus") or []:
        for key in counts:
            counts[key] += int(job.get(key) or 0)
    state = _state(done, failed, (counts["ready"], counts["succeeded"], counts["failed"]), pods)
    terminal = done or failed or {}
    suspended = _condition(trainjob, "Suspended")
    results = []
    for pod in sorted(pods, key=_creation_order):
        results += _pod_results(pod)
    pending = _pending_reason(pods) if state == "Pending" else ""
    state, pending = _queued(trainjob, state, pending, workload)
    if state == "Pending" and suspended and not pending:
        pending = _clip(f"Suspended: {suspended.get('message') or suspended.get('reason') or 'by its spec'}")
    return JobObservation(
        name=meta.get("name", ""),
        hash=(meta.get("annotations") or {}).get(c.ANNOTATION_SPEC_HASH),
        state=state,
        deleting=bool(meta.get("deletionTimestamp")),
        start_time=meta.get("creationTimestamp"),
        completion_time=terminal.get("lastTransitionTime") if terminal else None,
        reason=terminal.get("reason", ""),
        message=terminal.get("message", ""),
        results=results,
        pending_reason=pending,
        **counts,
    )


def observe_step(
    obj: dict[str, Any], pods: list[dict[str, Any]], workload: dict[str, Any] | None = None
) -> JobObservation:
    """A step's workload, a Job or (the train step with runtime trainjob) a TrainJob; `workload` is
    Kueue's Workload for it, if any."""
    observe = observe_trainjob if obj.get("kind") == "TrainJob" else observe_job
    return observe(obj, pods, workload)
