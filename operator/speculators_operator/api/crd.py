"""CustomResourceDefinitions of our kinds (and Kopf's peering CRDs), built from the models."""

from __future__ import annotations

from typing import Any

from speculators_operator import constants as c
from speculators_operator.api.benchmark import SpeculatorBenchmark
from speculators_operator.api.schema import resource_schema
from speculators_operator.api.speculator import Speculator
from speculators_operator.api.training import SpeculatorTraining

READY = ".status.conditions[?(@.type=='Ready')]"


def _column(name: str, type_: str, path: str, description: str, priority: int = 0) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path, "description": description}
    if priority:
        col["priority"] = priority
    return col


TRAINING_COLUMNS = [
    _column("Phase", "string", ".status.phase", "Pipeline phase."),
    _column("Progress", "integer", ".status.progress.percent", "Overall progress in percent."),
    _column(
        "Accept-Len", "number", ".status.evaluation.meanAcceptanceLength", "Evaluated mean acceptance length."
    ),
    _column(
        "Promoted", "string", ".status.conditions[?(@.type=='Promoted')].status", "Passed spec.promotion."
    ),
    _column("Ready", "string", f"{READY}.status", "Ready condition."),
    _column("Reason", "string", f"{READY}.reason", "Reason of the Ready condition."),
    _column("Age", "date", ".metadata.creationTimestamp", "Age."),
    _column("Verifier", "string", ".spec.verifier.uri", "Verifier model.", priority=1),
    _column("Output", "string", ".status.output.uri", "Trained draft.", priority=1),
]

SPECULATOR_COLUMNS = [
    _column("Phase", "string", ".status.phase", "Phase."),
    _column("Ready", "string", f"{READY}.status", "Ready condition."),
    _column("Replicas", "integer", ".status.readyReplicas", "Ready vLLM replicas."),
    _column("Method", "string", ".status.draft.method", "Speculative method."),
    _column("K", "integer", ".status.draft.numSpeculativeTokens", "Speculative tokens per step."),
    _column("Accept-Rate", "number", ".status.acceptance.acceptanceRate", "Live acceptance rate (window)."),
    _column(
        "Accept-Len", "number", ".status.acceptance.meanAcceptanceLength", "Live mean acceptance length."
    ),
    _column("Canary", "string", ".status.canary.phase", "The last canary of a retrained draft."),
    _column("URL", "string", ".status.url", "In-cluster URL."),
    _column("Age", "date", ".metadata.creationTimestamp", "Age."),
    _column("Reason", "string", f"{READY}.reason", "Reason of the Ready condition.", priority=1),
    _column(
        "Drifted", "string", ".status.conditions[?(@.type=='Drifted')].reason", "Live drift.", priority=1
    ),
    _column("Verifier", "string", ".spec.verifier.uri", "Verifier model.", priority=1),
    _column("Draft", "string", ".status.draft.uri", "Draft model.", priority=1),
]

BENCHMARK_COLUMNS = [
    _column("Speculator", "string", ".spec.speculatorRef.name", "The Speculator measured."),
    _column("Phase", "string", ".status.phase", "Phase."),
    _column(
        "Speed-up", "number", ".status.speedupAtLowestRate", "Speed-up (ITL p50 ratio) at the lowest rate."
    ),
    _column(
        "Breakeven", "number", ".status.breakevenRate", "Requests/s above which speculation stops paying."
    ),
    _column("Age", "date", ".metadata.creationTimestamp", "Age."),
    _column("Reason", "string", f"{READY}.reason", "Reason of the Ready condition.", priority=1),
    _column("Profile", "string", ".spec.rate.type", "GuideLLM rate profile.", priority=1),
    _column(
        "Results", "string", ".status.results.uri", "GuideLLM's reports and the HTML report.", priority=1
    ),
]


def _crd(
    kind: str,
    plural: str,
    short: list[str],
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
    subresources: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{c.GROUP}",
            "labels": {c.LABEL_PART_OF: c.PART_OF},
        },
        "spec": {
            "group": c.GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short,
                "categories": ["speculators", "ai"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": c.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def training_crd() -> dict[str, Any]:
    return _crd(
        c.TRAINING_KIND,
        c.TRAINING_PLURAL,
        ["spdt"],
        resource_schema(SpeculatorTraining),
        TRAINING_COLUMNS,
        {"status": {}},
    )


def speculator_crd() -> dict[str, Any]:
    return _crd(
        c.SPECULATOR_KIND,
        c.SPECULATOR_PLURAL,
        ["spd"],
        resource_schema(Speculator),
        SPECULATOR_COLUMNS,
        {
            "status": {},
            # kubectl scale / HPA act on spec.replicas; status.selector lets HPA find the pods.
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector",
            },
        },
    )


def benchmark_crd() -> dict[str, Any]:
    return _crd(
        c.BENCHMARK_KIND,
        c.BENCHMARK_PLURAL,
        ["spdb"],
        resource_schema(SpeculatorBenchmark),
        BENCHMARK_COLUMNS,
        {"status": {}},
    )


def _peering_crd(kind: str, plural: str, scope: str) -> dict[str, Any]:
    """Kopf's peering resource (used only with --peering NAME), as Kopf's docs define it."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kopf.dev", "labels": {c.LABEL_PART_OF: c.PART_OF}},
        "spec": {
            "group": "kopf.dev",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "scope": scope,
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                            },
                        }
                    },
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD object, in apply order."""
    return {
        f"{c.GROUP}_{c.TRAINING_PLURAL}.yaml": training_crd(),
        f"{c.GROUP}_{c.SPECULATOR_PLURAL}.yaml": speculator_crd(),
        f"{c.GROUP}_{c.BENCHMARK_PLURAL}.yaml": benchmark_crd(),
        "kopf.dev_kopfpeerings.yaml": _peering_crd("KopfPeering", "kopfpeerings", "Namespaced"),
        "kopf.dev_clusterkopfpeerings.yaml": _peering_crd(
            "ClusterKopfPeering", "clusterkopfpeerings", "Cluster"
        ),
    }
