"""Invalid resources are rejected by the API server itself (schema + CEL), with readable messages.

Each case changes one thing in a valid object; the expected text is what `kubectl apply` prints.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from spd_testlib import speculator_body, training_body


def _set(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return out


_DELETE = object()

SPECULATOR_CASES = [
    (
        "draft-uri-and-trainingRef",
        "spec.draft",
        {"uri": "hf://a/b", "trainingRef": {"name": "t"}},
        "draft needs exactly one of uri or trainingRef",
    ),
    ("draft-empty", "spec.draft", {}, "draft needs exactly one of uri or trainingRef"),
    (
        "draft-revision-with-trainingRef",
        "spec.draft",
        {"trainingRef": {"name": "t"}, "revision": "main"},
        "revision and secretRef apply only to a draft uri",
    ),
    (
        "k-zero",
        "spec.numSpeculativeTokens",
        0,
        "spec.numSpeculativeTokens in body should be greater than or equal to 1",
    ),
    (
        "k-17",
        "spec.numSpeculativeTokens",
        17,
        "spec.numSpeculativeTokens in body should be less than or equal to 16",
    ),
    (
        "verifier-http",
        "spec.verifier.uri",
        "https://huggingface.co/meta-llama/x",
        "must be hf://org/name, s3://bucket/prefix or pvc://claim/path",
    ),
    ("verifier-local-path", "spec.verifier.uri", "/models/llama", "must be hf://org/name"),
    (
        "revision-on-s3",
        "spec.verifier",
        {"uri": "s3://bucket/llama", "revision": "main"},
        "revision applies only to hf:// sources",
    ),
    ("method-unknown", "spec.method", "medusa", 'Unsupported value: "medusa"'),
    ("backend-unknown", "spec.backend", "knative", 'Unsupported value: "knative"'),
    (
        "extra-arg-speculative-config",
        "spec.vllm",
        {"extraArgs": ["--speculative-config={}"]},
        "extraArgs may not set --speculative-config",
    ),
    ("extra-arg-port", "spec.vllm", {"extraArgs": ["--port", "9000"]}, "extraArgs may not set"),
    ("gpu-memory-1.5", "spec.vllm", {"gpuMemoryUtilization": 1.5}, "should be less than or equal to 1"),
    ("privileged-port", "spec.vllm", {"port": 80}, "should be greater than or equal to 1024"),
    ("replicas-negative", "spec.replicas", -1, "should be greater than or equal to 0"),
    (
        "prometheus-without-url",
        "spec.metrics",
        {"source": "prometheus"},
        "metrics.source prometheus needs metrics.prometheusUrl",
    ),
    (
        "window-below-interval",
        "spec.metrics",
        {"intervalSeconds": 60, "windowSeconds": 30},
        "metrics.windowSeconds must be at least metrics.intervalSeconds",
    ),
    (
        "cache-claim-and-size",
        "spec.cache",
        {"claimName": "c", "size": "10Gi"},
        "size and storageClassName apply to a cache claim the operator creates",
    ),
    ("cache-size-not-quantity", "spec.cache", {"size": "big"}, "size must be a quantity such as 200Gi"),
    (
        "pod-labels-ours",
        "spec.podMetadata",
        {"labels": {"app.kubernetes.io/instance": "x"}},
        "podMetadata.labels may not set app.kubernetes.io/* or speculators.ai/* labels",
    ),
    ("secret-name", "spec.verifier.secretRef", {"name": "Bad_Name"}, "must be a Secret name"),
    ("missing-verifier", "spec.verifier", _DELETE, "spec.verifier: Required value"),
    ("name-starts-with-digit", "metadata.name", "8b-llama", "metadata.name must start with a letter"),
    ("name-too-long", "metadata.name", "l" * 56, "at most 55 characters"),
    (
        "tuning-min-above-max",
        "spec.tuning",
        {"mode": "auto", "min": 5, "max": 3},
        "tuning.min must not exceed tuning.max",
    ),
    ("tuning-mode", "spec.tuning", {"mode": "sometimes"}, 'Unsupported value: "sometimes"'),
    (
        "tuning-buckets-unsorted",
        "spec.tuning",
        {"mode": "auto", "loadBuckets": [16, 4]},
        "tuning.loadBuckets must be ascending batch sizes",
    ),
    (
        "tuning-buckets-duplicate",
        "spec.tuning",
        {"mode": "auto", "loadBuckets": [4, 4]},
        "Duplicate value: 4",
    ),
    ("tuning-bucket-zero", "spec.tuning", {"loadBuckets": [0]}, "should be greater than or equal to 1"),
    ("tuning-min-gain", "spec.tuning", {"minGain": -1}, "should be greater than or equal to 0"),
    ("tuning-cooldown", "spec.tuning", {"cooldownSeconds": 1}, "should be greater than or equal to 10"),
    ("tuning-cost-ratio", "spec.tuning", {"draftCostRatio": 0}, "should be greater than 0"),
]

TRAINING_CASES = [
    ("no-datasets", "spec.data.datasets", [], "spec.data.datasets in body should have at least 1 items"),
    ("dataset-uri", "spec.data.datasets", [{"uri": "ftp://x/y"}], "must be hf://org/name"),
    (
        "endpoint-without-regenerate",
        "spec.data.regenerateEndpoint",
        "http://vllm:8000/v1",
        "data.regenerateEndpoint needs data.regenerateResponses: true",
    ),
    ("holdout-0.9", "spec.data.holdoutFraction", 0.9, "should be less than or equal to 0.5"),
    ("algorithm", "spec.algorithm", "medusa", 'Unsupported value: "medusa"'),
    ("k-zero", "spec.training", {"numSpeculativeTokens": 0}, "should be greater than or equal to 1"),
    ("lr-zero", "spec.training", {"learningRate": 0}, "should be greater than 0"),
    ("fsdp-one-gpu", "spec.training", {"fsdp": True}, "training.fsdp needs more than one GPU"),
    ("mode", "spec.training", {"mode": "streaming"}, 'Unsupported value: "streaming"'),
    (
        "pvc-claim-and-class",
        "spec.output",
        {"pvc": {"claimName": "c", "storageClassName": "fast"}},
        "output.pvc.storageClassName applies to a claim the operator creates",
    ),
    ("pvc-size", "spec.output", {"pvc": {"size": "lots"}}, "size must be a quantity such as 200Gi"),
    (
        "s3-uri",
        "spec.output",
        {"s3": {"uri": "gs://bucket/x", "secretRef": {"name": "aws"}}},
        "must be s3://bucket/prefix",
    ),
    (
        "s3-without-secret",
        "spec.output",
        {"s3": {"uri": "s3://bucket/x"}},
        "spec.output.s3.secretRef: Required value",
    ),
    (
        "hub-repo",
        "spec.output",
        {"hub": {"repo": "no-org", "secretRef": {"name": "hf"}}},
        "must be a Hugging Face repo id org/name",
    ),
    ("deploy-k", "spec.deploy", {"numSpeculativeTokens": 20}, "should be less than or equal to 16"),
    ("deploy-name", "spec.deploy", {"name": "9serve"}, "deploy.name must be a DNS-1035 label"),
    ("pull-policy", "spec.image", {"pullPolicy": "Sometimes"}, 'Unsupported value: "Sometimes"'),
    (
        "promotion-speedup",
        "spec.promotion",
        {"minExpectedSpeedup": -1},
        "should be greater than or equal to 0",
    ),
    (
        "promotion-length",
        "spec.promotion",
        {"minMeanAcceptanceLength": 0.5},
        "should be greater than or equal to 1",
    ),
    ("promotion-live-drafts", "spec.promotion", {"minLiveDrafts": 0}, "should be greater than or equal to 1"),
    ("eval-max-k", "spec.evaluation", {"maxSpeculativeTokens": 17}, "should be less than or equal to 16"),
    (
        "eval-prompt-set-absolute",
        "spec.evaluation",
        {"promptSet": "/etc/passwd"},
        "evaluation.promptSet must be a relative path inside the workspace",
    ),
    (
        "eval-prompt-set-dotdot",
        "spec.evaluation",
        {"promptSet": "a/../../b.jsonl"},
        "evaluation.promptSet must be a relative path inside the workspace",
    ),
    (
        "deploy-auto-k-outside-range",
        "spec.deploy",
        {"numSpeculativeTokens": 9, "tuning": {"mode": "auto", "max": 6}},
        "with tuning.mode auto, numSpeculativeTokens is the k to start from",
    ),
]


def _reject(kube_api: Any, namespace: str, body: dict[str, Any], message: str) -> None:
    with pytest.raises(ApiException) as info:
        kube_api.create(body, namespace)
    assert info.value.status == 422, info.value.body
    text = json.loads(info.value.body)["message"]
    assert message in text, text


@pytest.mark.parametrize(
    ("case", "path", "value", "message"), SPECULATOR_CASES, ids=[c[0] for c in SPECULATOR_CASES]
)
def test_invalid_speculator(kube_api, namespace, operator_crds, case, path, value, message):
    _reject(kube_api, namespace, _set(speculator_body("valid"), path, value), message)


@pytest.mark.parametrize(
    ("case", "path", "value", "message"), TRAINING_CASES, ids=[c[0] for c in TRAINING_CASES]
)
def test_invalid_training(kube_api, namespace, operator_crds, case, path, value, message):
    _reject(kube_api, namespace, _set(training_body("valid"), path, value), message)


def test_the_valid_bases_are_accepted(kube_api, namespace, operator_crds):
    """The cases above fail for their one change, not for something in the base objects."""
    kube_api.create(speculator_body("valid"), namespace)
    kube_api.create(training_body("valid"), namespace)


@pytest.mark.parametrize(
    "training", [{"numLayers": 2}, {"draftVocabSize": 32000}], ids=["two-layers", "draft-vocab"]
)
def test_eagle_training_is_limited_to_its_format(kube_api, namespace, operator_crds, training):
    body = _set(_set(training_body("valid"), "spec.algorithm", "eagle"), "spec.training", training)
    _reject(kube_api, namespace, body, "algorithm eagle (EAGLE-1/HASS) has one decoder layer")


def test_eagle_training_with_its_defaults_is_accepted(kube_api, namespace, operator_crds):
    kube_api.create(_set(training_body("eagle-ok"), "spec.algorithm", "eagle"), namespace)


def test_eagle_training_cannot_deploy(kube_api, namespace, operator_crds):
    body = _set(_set(training_body("valid"), "spec.algorithm", "eagle"), "spec.deploy", {})
    _reject(kube_api, namespace, body, "deploy needs algorithm eagle3")
