"""Builders shared by the operator's unit tests: CR bodies as the API server returns them, Jobs, pods."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from speculators_operator import constants as c
from speculators_operator.api.benchmark import SpeculatorBenchmark
from speculators_operator.api.speculator import Speculator
from speculators_operator.api.training import SpeculatorTraining

REPO = Path(__file__).resolve().parents[2]
FIXTURE_METRICS = REPO / "tests" / "fixtures" / "vllm_spec_decode_metrics.txt"
NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


def with_defaults(body: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server stores it: schema defaults filled in (the models carry the same ones)."""
    model = {c.TRAINING_KIND: SpeculatorTraining, c.BENCHMARK_KIND: SpeculatorBenchmark}.get(
        body["kind"], Speculator
    )
    spec = model.model_validate(body).spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    out = copy.deepcopy(body)
    out["spec"] = spec
    out.setdefault("apiVersion", c.API_VERSION)
    meta = out.setdefault("metadata", {})
    meta.setdefault("namespace", "ns")
    meta.setdefault("uid", f"uid-{meta['name']}")
    meta.setdefault("generation", 1)
    return out


def training(name: str = "llama", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "verifier": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
        "data": {"datasets": [{"uri": "hf://HuggingFaceH4/ultrachat_200k", "split": "train_sft"}]},
    }
    base.update(spec)
    return with_defaults(
        {"apiVersion": c.API_VERSION, "kind": c.TRAINING_KIND, "metadata": {"name": name}, "spec": base}
    )


def speculator(name: str = "llama-spd", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "verifier": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
        "draft": {"uri": "hf://RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3"},
    }
    base.update(spec)
    return with_defaults(
        {"apiVersion": c.API_VERSION, "kind": c.SPECULATOR_KIND, "metadata": {"name": name}, "spec": base}
    )


def benchmark(name: str = "bench", speculator: str = "llama-spd", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"speculatorRef": {"name": speculator}}
    base.update(spec)
    return with_defaults(
        {"apiVersion": c.API_VERSION, "kind": c.BENCHMARK_KIND, "metadata": {"name": name}, "spec": base}
    )


def example(name: str) -> dict[str, Any]:
    body = yaml.safe_load((REPO / "examples" / name).read_text())
    return with_defaults(body)


def job_status(state: str, *, succeeded: int = 0, failed: int = 0, active: int = 0, ready: int = 0) -> dict:
    conditions = []
    if state == "Complete":
        conditions = [{"type": "Complete", "status": "True", "lastTransitionTime": NOW}]
    elif state == "Failed":
        conditions = [
            {
                "type": "Failed",
                "status": "True",
                "reason": "PodFailurePolicy",
                "message": "Container x exited with 2",
                "lastTransitionTime": NOW,
            }
        ]
    out: dict[str, Any] = {
        "startTime": NOW,
        "conditions": conditions,
        "succeeded": succeeded,
        "failed": failed,
        "active": active,
        "ready": ready,
    }
    if state == "Complete":
        out["completionTime"] = LATER
    return out


def as_observed_job(rendered: dict[str, Any], state: str, **counts: int) -> dict[str, Any]:
    """A rendered Job as the API server would show it after the Job controller ran it."""
    job = copy.deepcopy(rendered)
    job["metadata"]["uid"] = f"uid-{job['metadata']['name']}"
    job["status"] = job_status(state, **counts)
    return job


def terminated_pod(
    job: str,
    container: str,
    *,
    exit_code: int = 0,
    message: str = "",
    index: int | None = None,
    created: str = NOW,
) -> dict[str, Any]:
    annotations = {c.JOB_COMPLETION_INDEX_ANNOTATION: str(index)} if index is not None else {}
    return {
        "metadata": {
            "name": f"{job}-{index or 0}-abc",
            "labels": {c.JOB_NAME_LABEL: job},
            "annotations": annotations,
            "creationTimestamp": created,
        },
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {"name": container, "state": {"terminated": {"exitCode": exit_code, "message": message}}}
            ],
        },
    }


# -- cluster-test bodies and checks -------------------------------------------------------------------

API = c.API_VERSION
HOLD = {"sim.speculators.ai/hold": "true"}
DATASET = "hf://HuggingFaceH4/ultrachat_200k"
PREPARE = {"step": "prepare", "samples": 900, "tokens": 123456, "heldout": 45, "skipped": {}}
TRAIN = {
    "step": "train",
    "epochs": 1,
    "steps": 10,
    "loss": 2.5,
    "acc": [0.7, 0.5, 0.3],
    "cond_acc": [0.7, 0.6, 0.5],
    "est_accept_len": 2.21,
    "tokens_per_s": 5000.0,
    "output": "/workspace/llama/model",
}
EVAL = {
    "step": "eval",
    "k": 3,
    "mean_accept_len": 2.4,
    "per_pos": [0.75, 0.45, 0.2],
    "speedup": 1.9,
    "samples": 8,
}
INSPECT = {
    "algorithm": "eagle3",
    "method": "eagle3",
    "speculative_tokens": 3,
    "verifier": "meta-llama/Llama-3.1-8B-Instruct",
    "vocab_size": 128256,
    "draft_vocab_size": 32000,
    "params": 268000000,
}


def training_body(name: str = "llama", **spec: Any) -> dict[str, Any]:
    """A SpeculatorTraining whose Job pods are held Running until the test releases them."""
    base: dict[str, Any] = {
        "verifier": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
        "data": {"datasets": [{"uri": DATASET, "split": "train_sft"}], "maxSamples": 1000},
        "datagen": {"shards": 2},
        "output": {"pvc": {"size": "1Gi"}},
        "podMetadata": {"annotations": dict(HOLD)},
    }
    base.update(spec)
    return {"apiVersion": API, "kind": c.TRAINING_KIND, "metadata": {"name": name}, "spec": base}


def speculator_body(name: str = "llama", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "verifier": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
        "draft": {"uri": "hf://RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3"},
    }
    base.update(spec)
    return {"apiVersion": API, "kind": c.SPECULATOR_KIND, "metadata": {"name": name}, "spec": base}


def assert_subset(expected: Any, actual: Any, path: str = "") -> None:
    """Every field we render is on the server unchanged (the API server may add defaults around them)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is not an object"
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} missing on the server"
            assert_subset(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), (
            f"{path}: {actual!r} != {expected!r}"
        )
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_subset(e, a, f"{path}[{i}]")
    elif isinstance(expected, int | float) and not isinstance(expected, bool) and isinstance(actual, str):
        assert str(expected) == actual, (
            f"{path}: {actual!r} != {expected!r}"
        )  # quantities come back as strings
    else:
        assert expected == actual, f"{path}: {actual!r} != {expected!r}"


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(x for x in status.get("conditions", []) if x["type"] == type_)


def scaled_fixture(factor: float, created: float | None = None) -> str:
    """The real vLLM exposition text with every spec-decode counter times `factor` (more traffic), and
    optionally new *_created stamps (the process restarted)."""
    from speculators_core.vllm_metrics.exposition import parse

    lines = []
    for raw in FIXTURE_METRICS.read_text().splitlines():
        samples = list(parse(raw))
        if not samples:
            lines.append(raw)
            continue
        (s,) = samples
        labels = ",".join(f'{k}="{v}"' for k, v in s.labels.items())
        if s.name.endswith("_created"):
            value = created if created is not None else s.value
        else:
            value = s.value * factor
        lines.append(f"{s.name}{{{labels}}} {value!r}")
    return "\n".join(lines) + "\n"
