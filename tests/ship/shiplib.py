"""Helpers of the shipping tests: the charts rendered with `helm template`, repository paths, values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from release import helm
from release.paths import BUNDLE, CHART, CRD_CHART, CRDS, REPO

__all__ = [
    "BUNDLE",
    "CHART",
    "CRDS",
    "CRD_CHART",
    "FULL_VALUES",
    "REPO",
    "by_kind",
    "one",
    "render",
    "speculator_body",
]

# Every optional part switched on (ServiceMonitor, PrometheusRule, dashboard, egress policy, peering).
FULL_VALUES: dict[str, Any] = {
    "replicaCount": 2,
    "peering": {"enabled": True, "name": "speculators"},
    "metrics": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
    },
    "grafanaDashboard": {"enabled": True},
    "networkPolicy": {
        "enabled": True,
        "metricsFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
        "egress": {"enabled": True},
    },
    "imagePullSecrets": [{"name": "regcred"}],
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "priorityClassName": "system-cluster-critical",
    "kubeflowTrainer": {"clusterTrainingRuntime": {"enabled": True}},
}


def render(
    values: dict[str, Any] | None = None,
    *,
    chart: Path = CHART,
    release: str = "spd",
    namespace: str = "speculators-system",
) -> list[dict[str, Any]]:
    return helm.template(chart, release=release, namespace=namespace, values=values)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def speculator_body(name: str = "granite", namespace: str = "ns", **spec: Any) -> dict[str, Any]:
    """A Speculator as the API server stores it (schema defaults filled in from the API models)."""
    from speculators_operator.api.speculator import Speculator

    base: dict[str, Any] = {
        "verifier": {"uri": "hf://ibm-granite/granite-3.3-8b-instruct"},
        "draft": {"uri": "hf://RedHatAI/granite-3.3-8b-instruct-speculator.eagle3"},
        "method": "eagle3",
        "numSpeculativeTokens": 3,
    }
    base.update(spec)
    body = {
        "apiVersion": "speculators.ai/v1alpha1",
        "kind": "Speculator",
        "metadata": {"name": name},
        "spec": base,
    }
    defaulted = Speculator.model_validate(body).spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {
        **body,
        "spec": defaulted,
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1},
    }


def training_body(name: str = "llama", namespace: str = "ns", **spec: Any) -> dict[str, Any]:
    """A SpeculatorTraining as the API server stores it (schema defaults filled in)."""
    from speculators_operator.api.training import SpeculatorTraining

    base: dict[str, Any] = {
        "verifier": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
        "data": {"datasets": [{"uri": "hf://HuggingFaceH4/ultrachat_200k", "split": "train_sft"}]},
    }
    base.update(spec)
    body = {
        "apiVersion": "speculators.ai/v1alpha1",
        "kind": "SpeculatorTraining",
        "metadata": {"name": name},
        "spec": base,
    }
    defaulted = SpeculatorTraining.model_validate(body).spec.model_dump(
        by_alias=True, exclude_none=True, mode="json"
    )
    return {
        **body,
        "spec": defaulted,
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1},
    }


SHIP_CRDS = Path(__file__).parent / "third_party_crds"


def install_ship_crds(install_crds: Any, third_party_crds: list[str]) -> list[str]:
    """KServe, Argo CD Application, Route, ServiceMonitor (the session's third-party CRDs), PrometheusRule
    (tests/ship/third_party_crds), and crds/ (speculators.ai and Kopf's peering).

    A helper, not a conftest fixture: tests/ship has no conftest.py, because tests elsewhere import
    their own `conftest` module by name."""
    return [*third_party_crds, *install_crds(*sorted(SHIP_CRDS.glob("*.yaml")), *sorted(CRDS.glob("*.yaml")))]
