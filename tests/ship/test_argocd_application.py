"""The example Argo CD Applications (argocd/applications.yaml) and the workload they sync
(argocd/example-workload/): consistent with the charts and the version, ordered by sync waves, and
accepted by the real Application CRD and our CRDs."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from shiplib import CHART, CRD_CHART, CRDS, REPO, render

from speculators_core import version

APPS = REPO / "argocd" / "applications.yaml"
WORKLOAD = REPO / "argocd" / "example-workload"
WAVE = "argocd.argoproj.io/sync-wave"


def _apps() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(APPS.read_text()) if d]


def _workload() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted(WORKLOAD.glob("*.yaml"))]


def _wave(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["annotations"][WAVE])


def test_chart_applications_pin_this_version_of_our_charts() -> None:
    charts = {a["spec"]["source"].get("chart"): a for a in _apps() if a["spec"]["source"].get("chart")}
    names = {yaml.safe_load((c / "Chart.yaml").read_text())["name"] for c in (CHART, CRD_CHART)}
    assert set(charts) == names
    for app in charts.values():
        assert app["spec"]["source"]["targetRevision"] == version.__version__


def test_waves_put_crds_first_then_the_operator_then_workloads() -> None:
    apps = {a["metadata"]["name"]: a for a in _apps()}
    crds, operator = apps["speculators-operator-crds"], apps["speculators-operator"]
    workloads = [a for a in apps.values() if a["spec"]["source"].get("path")]
    assert workloads
    assert _wave(crds) < _wave(operator) < min(_wave(w) for w in workloads)
    assert "ServerSideApply=true" in crds["spec"]["syncPolicy"]["syncOptions"]
    assert crds["spec"]["syncPolicy"]["automated"]["prune"] is False
    for app in workloads:
        assert "SkipDryRunOnMissingResource=true" in app["spec"]["syncPolicy"]["syncOptions"]
        assert (REPO / app["spec"]["source"]["path"]).is_dir()


def test_training_gates_serving_in_the_workload() -> None:
    objs = {o["kind"]: o for o in _workload()}
    training, speculator = objs["SpeculatorTraining"], objs["Speculator"]
    assert _wave(training) < _wave(speculator)
    assert speculator["spec"]["draft"]["trainingRef"]["name"] == training["metadata"]["name"]


def test_operator_application_values_render_the_chart() -> None:
    app = next(a for a in _apps() if a["spec"]["source"].get("chart") == "speculators-operator")
    kinds = {o["kind"] for o in render(app["spec"]["source"]["helm"]["valuesObject"])}
    assert {"ServiceMonitor", "PrometheusRule", "ConfigMap", "Deployment"} <= kinds


@pytest.mark.slow
def test_applications_and_workload_pass_the_api_server(
    kube_api: Any, install_crds: Any, third_party_crds: list[str], namespace: str
) -> None:
    """Server-side dry-run against the real Argo CD Application CRD and our CRDs."""
    assert "applications.argoproj.io" in third_party_crds
    install_crds(*sorted(CRDS.glob("speculators.ai_*.yaml")))
    for app in _apps():
        app = {**app, "metadata": {**app["metadata"], "namespace": namespace}}
        kube_api.create(app, namespace, dry_run=True)
    for obj in _workload():
        kube_api.create(obj, namespace, dry_run=True)
