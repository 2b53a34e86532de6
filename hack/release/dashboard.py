"""The Grafana dashboard (charts/speculators-operator/dashboards/speculators.json), built from a short
description of its panels over the operator's own metrics (speculators_operator.opmetrics)."""

from __future__ import annotations

import json
from typing import Any

UID = "speculators-operator"
DS = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace=~"$namespace"'


def _target(expr: str, legend: str, ref: str = "A", *, instant: bool = False) -> dict[str, Any]:
    target: dict[str, Any] = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}
    if instant:
        target.update(instant=True, format="table")
    return target


def _panel(
    pid: int,
    title: str,
    kind: str,
    grid: tuple[int, int, int, int],
    targets: list[dict[str, Any]],
    *,
    description: str,
    unit: str | None = None,
    minmax: tuple[float, float] | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    x, y, w, h = grid
    defaults: dict[str, Any] = {}
    if unit:
        defaults["unit"] = unit
    if minmax:
        defaults["min"], defaults["max"] = minmax
    panel: dict[str, Any] = {
        "id": pid,
        "title": title,
        "description": description,
        "type": kind,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
    }
    if options:
        panel["options"] = options
    return panel


def _row(pid: int, title: str, y: int) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
    }


def panels() -> list[dict[str, Any]]:
    sel = f'{NS}, speculator=~"$speculator"'
    return [
        _row(1, "Serving: speculative-decoding acceptance per Speculator", 0),
        _panel(
            2,
            "Acceptance rate",
            "timeseries",
            (0, 1, 12, 8),
            [_target(f"speculators_acceptance_rate{{{sel}}}", "{{namespace}}/{{speculator}}")],
            description="Accepted / proposed draft tokens over each Speculator's window (status.acceptance).",
            unit="percentunit",
            minmax=(0, 1),
        ),
        _panel(
            3,
            "Mean acceptance length",
            "timeseries",
            (12, 1, 12, 8),
            [_target(f"speculators_mean_acceptance_length{{{sel}}}", "{{namespace}}/{{speculator}}")],
            description="Tokens produced per verifier step: 1 + accepted tokens / drafts.",
            unit="none",
        ),
        _panel(
            4,
            "Acceptance per draft position",
            "bargauge",
            (0, 9, 12, 8),
            [
                _target(
                    f"speculators_acceptance_per_position{{{sel}}}",
                    "{{speculator}} pos {{position}}",
                    instant=True,
                )
            ],
            description="Acceptance rate of each draft position: where the draft starts to diverge.",
            unit="percentunit",
            minmax=(0, 1),
            options={"orientation": "horizontal", "displayMode": "gradient"},
        ),
        _panel(
            5,
            "Draft tokens in the window",
            "timeseries",
            (12, 9, 12, 8),
            [_target(f"speculators_window_draft_tokens{{{sel}}}", "{{namespace}}/{{speculator}}")],
            description="Draft tokens proposed in the window: no traffic, no acceptance numbers.",
            unit="short",
        ),
        _row(6, "Training", 17),
        _panel(
            7,
            "Training progress",
            "bargauge",
            (0, 18, 12, 8),
            [
                _target(
                    f"speculators_training_progress_percent{{{NS}}}",
                    "{{namespace}}/{{training}}",
                    instant=True,
                )
            ],
            description="status.progress.percent of each SpeculatorTraining.",
            unit="percent",
            minmax=(0, 100),
            options={"orientation": "horizontal", "displayMode": "gradient"},
        ),
        _panel(
            8,
            "Phases",
            "table",
            (12, 18, 12, 8),
            [
                _target(
                    f"speculators_operator_resource_phase{{{NS}}} == 1",
                    "{{kind}} {{namespace}}/{{name}}: {{phase}}",
                    instant=True,
                )
            ],
            description="Current phase of every SpeculatorTraining and Speculator.",
            options={"showHeader": True},
        ),
        _row(9, "Operator", 26),
        _panel(
            10,
            "Reconciles and errors",
            "timeseries",
            (0, 27, 12, 8),
            [
                _target(
                    "sum by (kind) (rate(speculators_operator_reconciles_total[5m]))", "{{kind}} reconciles"
                ),
                _target(
                    "sum by (kind) (rate(speculators_operator_reconcile_errors_total[5m]))",
                    "{{kind}} errors",
                    "B",
                ),
            ],
            description="Reconciles per second, and those that raised.",
            unit="ops",
        ),
        _panel(
            11,
            "Reconcile duration (p95)",
            "timeseries",
            (12, 27, 12, 8),
            [
                _target(
                    "histogram_quantile(0.95, sum by (kind, le) "
                    "(rate(speculators_operator_reconcile_duration_seconds_bucket[5m])))",
                    "{{kind}}",
                )
            ],
            description="95th percentile of one reconcile's duration.",
            unit="s",
        ),
        _row(12, "Closed loop: drift, retrain, canary (spec.retrain)", 35),
        _panel(
            13,
            "Canary vs stable mean acceptance length",
            "timeseries",
            (0, 36, 12, 8),
            [
                _target(f"speculators_mean_acceptance_length{{{sel}}}", "{{speculator}} stable"),
                _target(f"speculators_canary_mean_acceptance_length{{{sel}}}", "{{speculator}} canary", "B"),
            ],
            description="A retrained draft on canary against the stable pods over the same window.",
            unit="none",
        ),
        _panel(
            14,
            "Drift and retrains",
            "timeseries",
            (12, 36, 12, 8),
            [
                _target(f"speculators_drifted{{{sel}}}", "{{speculator}} drifted"),
                _target(f"speculators_retrains{{{sel}}}", "{{speculator}} retrains", "B"),
            ],
            description="1 while live acceptance is below the retrain bar; retrains started so far.",
            unit="short",
        ),
    ]


def dashboard() -> dict[str, Any]:
    def var(name: str, query: str, label: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "query": {"query": query, "refId": name},
            "definition": query,
            "includeAll": True,
            "multi": True,
            "current": {"text": "All", "value": "$__all"},
            "refresh": 2,
            "regex": "",
            "sort": 1,
        }

    return {
        "uid": UID,
        "title": "Speculators: speculative decoding",
        "description": "Acceptance of every Speculator and progress of every SpeculatorTraining "
        "(metrics of speculators-operator).",
        "tags": ["speculators", "vllm", "speculative-decoding"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "browser",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                var("namespace", "label_values(speculators_operator_resource_phase, namespace)", "Namespace"),
                var(
                    "speculator",
                    'label_values(speculators_acceptance_rate{namespace=~"$namespace"}, speculator)',
                    "Speculator",
                ),
            ]
        },
        "annotations": {"list": []},
        "panels": panels(),
    }


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=False) + "\n"
