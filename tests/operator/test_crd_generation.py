"""CRD generation: drift, structural schemas, descriptions, defaults, CEL rules, columns, subresources."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError
from spd_testlib import REPO

from speculators_operator.api import Speculator, SpeculatorTraining
from speculators_operator.api.common import source_uri_ok
from speculators_operator.api.crd import all_crds, speculator_crd, training_crd
from speculators_operator.api.generate import drift, render_files
from speculators_operator.api.schema import walk


def _schema(crd: dict) -> dict:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_crds_in_repo_match_the_models():
    """crds/ is generated: `make crds` after changing a model, or this fails."""
    assert drift(REPO / "crds") == [], "crds/ is stale: run `make crds`"


def test_generated_yaml_round_trips():
    for name, text in render_files().items():
        assert yaml.safe_load(text) == all_crds()[name]


@pytest.mark.parametrize("crd", [training_crd(), speculator_crd()], ids=["training", "speculator"])
def test_schema_is_structural_and_explained(crd):
    for path, node in walk(_schema(crd)):
        if path in ("", ".metadata"):
            continue
        if not path.endswith(("[]", "{}")):  # items/values are explained by their field
            assert node.get("description"), f"{path} has no description (kubectl explain)"
        assert "$ref" not in node and "nullable" not in node
        typed = "type" in node or node.get("x-kubernetes-int-or-string")
        assert typed, f"{path} has no type"
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: anyOf only for int-or-string"
        if node.get("type") == "object":
            assert (
                "properties" in node
                or "additionalProperties" in node
                or node.get("x-kubernetes-preserve-unknown-fields")
            ), f"{path}: an object without a schema would be pruned"


def test_defaults_live_in_the_schema():
    spec = _schema(training_crd())["properties"]["spec"]["properties"]
    assert spec["algorithm"]["default"] == "eagle3"
    assert spec["training"]["default"] == {
        "mode": "offline",
        "epochs": 20,
        "learningRate": 0.0001,
        "scheduler": "cosine",
        "warmupSteps": 0,
        "tttSteps": 3,
        "loss": "kl",
        "stepWeighting": "acceptance",
        # numLayers and numSpeculativeTokens depend on the algorithm (1 and 3; dflash 5 and blockSize-1):
        # a structural default cannot, so the operator resolves them (api.training.resolved_*); so does
        # trainLmHead (eagle3: trained, by the trainer's own default).
        "dflash": {
            "blockSize": 16,
            "maxAnchors": 512,
            "lossWeighting": "dpace",
            "decayGamma": 4.0,
            "dpaceAlpha": 0.5,
        },
        "nodes": 1,
        "gpusPerNode": 1,
        "seed": 42,
        "fsdp": False,
        "maxRetries": 3,
        "runtime": "job",
        "trainingRuntime": "speculators-torchrun",
    }
    assert spec["datagen"]["properties"]["resources"]["default"] == {"limits": {"nvidia.com/gpu": 1}}
    assert spec["data"]["properties"]["maxLength"]["default"] == 2048
    sspec = _schema(speculator_crd())["properties"]["spec"]["properties"]
    assert sspec["replicas"]["default"] == 1
    assert sspec["vllm"]["default"] == {"tensorParallelSize": 1, "port": 8000}
    assert sspec["metrics"]["default"] == {
        "enabled": True,
        "intervalSeconds": 30,
        "windowSeconds": 300,
        "source": "pods",
    }
    assert sspec["startupTimeoutSeconds"]["default"] == 1800
    assert sspec["backend"]["enum"] == ["deployment", "kserve", "llmisvc"]
    assert sspec["llmisvc"]["properties"]["router"]["default"] == {
        "route": {},
        "gateway": {},
        "scheduler": {},
    }


def test_ranges_and_enums():
    sspec = _schema(speculator_crd())["properties"]["spec"]["properties"]
    assert (sspec["numSpeculativeTokens"]["minimum"], sspec["numSpeculativeTokens"]["maximum"]) == (1, 16)
    assert sspec["method"]["enum"] == ["eagle3", "eagle", "peagle", "dflash", "dspark"]
    gmu = sspec["vllm"]["properties"]["gpuMemoryUtilization"]
    assert gmu["minimum"] == 0 and gmu["exclusiveMinimum"] is True and gmu["maximum"] == 1
    tspec = _schema(training_crd())["properties"]["spec"]["properties"]
    assert tspec["data"]["properties"]["datasets"]["minItems"] == 1
    size = tspec["output"]["properties"]["pvc"]["properties"]["size"]
    assert size["x-kubernetes-int-or-string"] is True


def test_cel_rules_for_cross_field_checks():
    sspec = _schema(speculator_crd())["properties"]["spec"]["properties"]
    draft_rules = [r["message"] for r in sspec["draft"]["x-kubernetes-validations"]]
    assert "draft needs exactly one of uri or trainingRef" in draft_rules
    metrics_rules = [r["message"] for r in sspec["metrics"]["x-kubernetes-validations"]]
    assert "metrics.source prometheus needs metrics.prometheusUrl" in metrics_rules
    root = _schema(speculator_crd())["x-kubernetes-validations"][0]
    assert root["fieldPath"] == ".metadata" and "55" in root["message"]


def test_printer_columns_short_names_and_subresources():
    t, s = training_crd()["spec"], speculator_crd()["spec"]
    assert t["names"]["shortNames"] == ["spdt"] and s["names"]["shortNames"] == ["spd"]
    assert t["versions"][0]["subresources"] == {"status": {}}
    assert s["versions"][0]["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    tcols = [c["name"] for c in t["versions"][0]["additionalPrinterColumns"] if not c.get("priority")]
    assert tcols == ["Phase", "Progress", "Accept-Len", "Promoted", "Ready", "Reason", "Age"]
    scols = [c["name"] for c in s["versions"][0]["additionalPrinterColumns"] if not c.get("priority")]
    assert scols == [
        "Phase",
        "Ready",
        "Replicas",
        "Method",
        "K",
        "Accept-Rate",
        "Accept-Len",
        "Canary",
        "URL",
        "Age",
    ]


def test_status_schema_declares_every_field_the_operator_writes():
    """Undeclared status fields would be pruned by the API server."""
    status = _schema(speculator_crd())["properties"]["status"]["properties"]
    assert set(status) >= {
        "observedGeneration",
        "phase",
        "conditions",
        "url",
        "replicas",
        "readyReplicas",
        "updatedReplicas",
        "selector",
        "draft",
        "acceptance",
    }
    acceptance = status["acceptance"]["properties"]
    assert set(acceptance) == {
        "acceptanceRate",
        "meanAcceptanceLength",
        "perPosition",
        "drafts",
        "draftTokens",
        "acceptedTokens",
        "windowSeconds",
        "pods",
        "source",
        "lastScrapeTime",
    }
    assert status["conditions"]["x-kubernetes-list-type"] == "map"
    tstatus = _schema(training_crd())["properties"]["status"]["properties"]
    assert set(tstatus) >= {
        "observedGeneration",
        "phase",
        "conditions",
        "steps",
        "progress",
        "metrics",
        "evaluation",
        "output",
        "speculatorRef",
        "startTime",
        "completionTime",
    }


@pytest.mark.parametrize(
    "name",
    [
        "speculatortraining-llama3-eagle3.yaml",
        "speculator-llama3-hub.yaml",
        "speculator-from-training.yaml",
        "speculator-retrain-on-traffic.yaml",
    ],
)
def test_examples_parse(name):
    body = yaml.safe_load((REPO / "examples" / name).read_text())
    model = SpeculatorTraining if body["kind"] == "SpeculatorTraining" else Speculator
    model.model_validate(body)


def test_pydantic_mirrors_ranges():
    with pytest.raises(ValidationError):
        Speculator.model_validate(
            {
                "metadata": {},
                "spec": {
                    "verifier": {"uri": "hf://a/b"},
                    "draft": {"uri": "hf://c/d"},
                    "numSpeculativeTokens": 17,
                },
            }
        )


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("hf://meta-llama/Llama-3.1-8B-Instruct", True),
        ("hf://gpt2", True),
        ("s3://my-bucket/models/llama", True),
        ("pvc://models/llama/8b", True),
        ("pvc://models", True),
        ("http://example.com/x", False),
        ("hf://", False),
        ("s3://A_B/x", False),
        ("pvc://Bad_Claim/x", False),
        ("/models/llama", False),
        # what speculators_core.sources refuses, refused at admission too
        ("hf://org/na--me", False),
        ("hf://org/a..b", False),
        ("hf://org/" + "x" * 97, False),
        ("pvc://models/../etc", False),
        ("pvc://bad..claim/x", False),
        ("s3://my-bucket/a..b", True),
    ],
)
def test_source_uri_rule(uri, ok):
    from speculators_core.sources import SourceError, parse_source

    assert source_uri_ok(uri) is ok
    if ok:
        parse_source(uri)  # what admission lets through, the Jobs can read
    elif uri.startswith(("hf://", "pvc://")) and uri not in ("hf://",):
        with pytest.raises(SourceError):
            parse_source(uri)
