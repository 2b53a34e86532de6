"""The operator's own Prometheus metrics: reconciles, errors, latency per kind; acceptance per Speculator;
training progress."""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("speculators_operator_reconciles_total", "Reconciles run, by kind.", ["kind"])
ERRORS = Counter("speculators_operator_reconcile_errors_total", "Reconciles that raised, by kind.", ["kind"])
LATENCY = Histogram(
    "speculators_operator_reconcile_duration_seconds",
    "Reconcile duration, by kind.",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SCRAPES = Counter(
    "speculators_operator_scrapes_total",
    "vLLM /metrics scrapes (or Prometheus queries).",
    ["namespace", "speculator"],
)
SCRAPE_ERRORS = Counter(
    "speculators_operator_scrape_errors_total", "Failed scrapes or queries.", ["namespace", "speculator"]
)
ACCEPTANCE_RATE = Gauge(
    "speculators_acceptance_rate", "Accepted / draft tokens over the window.", ["namespace", "speculator"]
)
MEAN_ACCEPTANCE_LENGTH = Gauge(
    "speculators_mean_acceptance_length",
    "1 + accepted tokens / drafts over the window.",
    ["namespace", "speculator"],
)
PER_POSITION = Gauge(
    "speculators_acceptance_per_position",
    "Acceptance rate of each draft position over the window.",
    ["namespace", "speculator", "position"],
)
DRAFT_TOKENS = Gauge(
    "speculators_window_draft_tokens", "Draft tokens proposed in the window.", ["namespace", "speculator"]
)
CANARY_MEAN_ACCEPTANCE_LENGTH = Gauge(
    "speculators_canary_mean_acceptance_length",
    "Mean acceptance length of a running canary's pods (status.canary.acceptance).",
    ["namespace", "speculator"],
)
RETRAINS = Gauge(
    "speculators_retrains", "Retrains started so far (status.retrain.count).", ["namespace", "speculator"]
)
DRIFTED = Gauge(
    "speculators_drifted",
    "1 while live acceptance is below the spec.retrain bar (condition Drifted=True).",
    ["namespace", "speculator"],
)
TRAINING_PROGRESS = Gauge(
    "speculators_training_progress_percent",
    "status.progress.percent of each SpeculatorTraining.",
    ["namespace", "training"],
)
PHASE = Gauge(
    "speculators_operator_resource_phase",
    "1 for the current phase of each resource.",
    ["kind", "namespace", "name", "phase"],
)

_phases: dict[tuple[str, str, str], str] = {}
_positions: dict[tuple[str, str], int] = {}


def set_acceptance(namespace: str, name: str, acceptance: dict[str, Any] | None) -> None:
    if not acceptance:
        forget_acceptance(namespace, name)
        return
    if acceptance.get("acceptanceRate") is not None:
        ACCEPTANCE_RATE.labels(namespace, name).set(acceptance["acceptanceRate"])
    if acceptance.get("meanAcceptanceLength") is not None:
        MEAN_ACCEPTANCE_LENGTH.labels(namespace, name).set(acceptance["meanAcceptanceLength"])
    DRAFT_TOKENS.labels(namespace, name).set(acceptance.get("draftTokens") or 0)
    per_pos = acceptance.get("perPosition") or []
    for i, rate in enumerate(per_pos):
        PER_POSITION.labels(namespace, name, str(i)).set(rate)
    for i in range(len(per_pos), _positions.get((namespace, name), 0)):
        _remove(PER_POSITION, namespace, name, str(i))
    _positions[(namespace, name)] = len(per_pos)


def forget_acceptance(namespace: str, name: str) -> None:
    for gauge in (ACCEPTANCE_RATE, MEAN_ACCEPTANCE_LENGTH, DRAFT_TOKENS):
        _remove(gauge, namespace, name)
    for i in range(_positions.pop((namespace, name), 0)):
        _remove(PER_POSITION, namespace, name, str(i))


def set_loop(namespace: str, name: str, status: dict[str, Any] | None) -> None:
    """The closed loop's numbers (spec.retrain), from the status just written; None forgets them."""
    status = status or {}
    retrain, canary = status.get("retrain"), status.get("canary") or {}
    if retrain is None:
        for gauge in (RETRAINS, DRIFTED):
            _remove(gauge, namespace, name)
    else:
        RETRAINS.labels(namespace, name).set(int(retrain.get("count") or 0))
        drifted = any(
            c.get("type") == "Drifted" and c.get("status") == "True" for c in status.get("conditions") or []
        )
        DRIFTED.labels(namespace, name).set(1 if drifted else 0)
    length = (canary.get("acceptance") or {}).get("meanAcceptanceLength")
    if canary.get("phase") in ("Running", "Promoting") and length is not None:
        CANARY_MEAN_ACCEPTANCE_LENGTH.labels(namespace, name).set(length)
    else:
        _remove(CANARY_MEAN_ACCEPTANCE_LENGTH, namespace, name)


def set_progress(namespace: str, name: str, percent: float | None) -> None:
    if percent is None:
        _remove(TRAINING_PROGRESS, namespace, name)
    else:
        TRAINING_PROGRESS.labels(namespace, name).set(percent)


def set_phase(kind: str, namespace: str, name: str, phase: str | None) -> None:
    key = (kind, namespace, name)
    old = _phases.get(key)
    if old == phase:
        return
    if old is not None:
        _remove(PHASE, kind, namespace, name, old)
    if phase:
        PHASE.labels(kind, namespace, name, phase).set(1)
        _phases[key] = phase
    else:
        _phases.pop(key, None)


def _remove(metric: Any, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
