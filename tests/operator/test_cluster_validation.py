"""Invalid resources are rejected by the API server itself (schema + CEL), with readable messages.

Each case changes one thing in a valid object; the expected text is what `kubectl apply` prints.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from spd_testlib import DATASET, speculator_body, training_body


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
        'extraArgs item "--speculative-config={}" sets a flag the operator renders',
    ),
    ("extra-arg-port", "spec.vllm", {"extraArgs": ["--port", "9000"]}, 'item "--port" sets a flag'),
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
    ("cache-size-not-quantity", "spec.cache", {"size": "big"}, "cache.size must be a positive quantity"),
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
    # vllm.extraArgs in every spelling vLLM's parser reads as a flag the operator renders
    (
        "extra-arg-underscore",
        "spec.vllm",
        {"extraArgs": ["--tensor_parallel_size", "4"]},
        'item "--tensor_parallel_size"',
    ),
    ("extra-arg-equals", "spec.vllm", {"extraArgs": ["--max-model-len=8192"]}, 'item "--max-model-len=8192"'),
    (
        "extra-arg-underscore-equals",
        "spec.vllm",
        {"extraArgs": ["--gpu_memory_utilization=0.5"]},
        "sets a flag",
    ),
    ("extra-arg-short-tp", "spec.vllm", {"extraArgs": ["-tp", "2"]}, 'item "-tp" sets a flag'),
    ("extra-arg-short-sc", "spec.vllm", {"extraArgs": ["-sc", "{}"]}, 'item "-sc" sets a flag'),
    (
        "extra-arg-abbreviation",
        "spec.vllm",
        {"extraArgs": ["--tensor-parallel", "4"]},
        "unambiguous prefixes",
    ),
    ("extra-arg-dotted", "spec.vllm", {"extraArgs": ["--speculative-config.method", "ngram"]}, "sets a flag"),
    (
        "extra-arg-dotted-underscore",
        "spec.vllm",
        {"extraArgs": ["--speculative_config.num_speculative_tokens=5"]},
        "sets a flag",
    ),
    ("extra-arg-spec-tokens", "spec.vllm", {"extraArgs": ["--spec-tokens", "5"]}, 'item "--spec-tokens"'),
    ("extra-arg-spec-model", "spec.vllm", {"extraArgs": ["--spec_model=/x"]}, "sets a flag"),
    ("extra-arg-legacy-k", "spec.vllm", {"extraArgs": ["--num-speculative-tokens", "5"]}, "sets a flag"),
    ("extra-arg-legacy-model", "spec.vllm", {"extraArgs": ["--speculative_model", "x"]}, "sets a flag"),
    ("extra-arg-served-name", "spec.vllm", {"extraArgs": ["--served-model-name=x"]}, "vllm.servedModelName"),
    ("extra-arg-model", "spec.vllm", {"extraArgs": ["--model", "x"]}, 'item "--model" sets a flag'),
    ("extra-arg-host", "spec.vllm", {"extraArgs": ["--host=127.0.0.1"]}, "sets a flag"),
    (
        "extra-arg-combined",
        "spec.vllm",
        {"extraArgs": ["--tensor-parallel-size 4"]},
        'holds a flag and its value in one item; write them as two items: ["--tensor-parallel-size", "4"]',
    ),
    (
        "extra-arg-combined-unmanaged",
        "spec.vllm",
        {"extraArgs": ["--max-num-seqs 128"]},
        'two items: ["--max-num-seqs", "128"]',
    ),
    # negative quantities
    (
        "limit-negative",
        "spec.resources",
        {"limits": {"memory": "-64Gi"}},
        "resources.limits values must be non-negative",
    ),
    (
        "request-negative",
        "spec.resources",
        {"requests": {"cpu": -1}},
        "resources.requests values must be non-negative",
    ),
    ("cache-size-negative", "spec.cache", {"size": "-10Gi"}, "cache.size must be a positive quantity"),
    ("cache-size-zero", "spec.cache", {"size": "0"}, "cache.size must be a positive quantity"),
    # secrets inline
    (
        "env-hf-token",
        "spec.vllm",
        {"env": [{"name": "HF_TOKEN", "value": "hf_abc"}]},
        "env HF_TOKEN looks like a credential",
    ),
    (
        "env-aws-secret",
        "spec.vllm",
        {"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}]},
        "valueFrom.secretKeyRef",
    ),
    (
        "env-api-key",
        "spec.vllm",
        {"env": [{"name": "vllm_api_key", "value": "x"}]},
        "env vllm_api_key looks like a credential",
    ),
    (
        "env-password",
        "spec.vllm",
        {"env": [{"name": "DB_PASSWORD", "value": "x"}]},
        "looks like a credential",
    ),
    (
        "env-both",
        "spec.vllm",
        {"env": [{"name": "A", "value": "x", "valueFrom": {"fieldRef": {}}}]},
        "set value or valueFrom, not both",
    ),
    (
        "env-bad-name",
        "spec.vllm",
        {"env": [{"name": "1BAD NAME", "value": "x"}]},
        "env name must be a C identifier-like name",
    ),
    ("env-as-map", "spec.vllm", {"env": {"FOO": "bar"}}, "spec.vllm.env: Invalid value"),
    # names of other kinds say which kind
    (
        "training-ref-name",
        "spec.draft",
        {"trainingRef": {"name": "Bad_Name"}},
        "must be a SpeculatorTraining name",
    ),
    (
        "toleration-seconds-negative",
        "spec.scheduling",
        {"tolerations": [{"tolerationSeconds": -5}]},
        "greater than or equal to 0",
    ),
    ("run-as-user-huge", "spec.securityContext", {"runAsUser": 2**40}, "less than or equal to 2147483647"),
    ("sa-name", "spec.scheduling", {"serviceAccountName": "Bad_SA"}, "must be a ServiceAccount name"),
    (
        "priority-class",
        "spec.scheduling",
        {"priorityClassName": "High Priority"},
        "must be a PriorityClass name",
    ),
    ("pod-label-value", "spec.podMetadata", {"labels": {"team": "a b"}}, "podMetadata.labels: keys must be"),
    ("pod-label-key", "spec.podMetadata", {"labels": {"bad key": "x"}}, "podMetadata.labels: keys must be"),
    (
        "pod-annotation-key",
        "spec.podMetadata",
        {"annotations": {"bad key!": "x"}},
        "annotations keys must be",
    ),
    ("verifier-double-dash", "spec.verifier.uri", "hf://org/na--me", "no '--' in a hub id"),
    ("draft-dotdot", "spec.draft", {"uri": "pvc://models/../secrets"}, "no '..' in a path or hub id"),
]

TRAINING_CASES = [
    (
        "dflash-k-above-block",
        "spec",
        {
            **training_body("valid")["spec"],
            "algorithm": "dflash",
            "training": {"numSpeculativeTokens": 8, "dflash": {"blockSize": 8}},
        },
        "must be below training.dflash.blockSize",
    ),
    ("dflash-block", "spec.training.dflash", {"blockSize": 65}, "should be less than or equal to 64"),
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
    (
        "pvc-size",
        "spec.output",
        {"pvc": {"size": "lots"}},
        "output.pvc.size must be a positive quantity such as 200Gi",
    ),
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
    ("layer-id-negative", "spec.datagen", {"layerIds": [-1, 4]}, "should be greater than or equal to 0"),
    ("layer-id-huge", "spec.datagen", {"layerIds": [2, 4096]}, "should be less than or equal to 1023"),
    (
        "pvc-size-negative",
        "spec.output",
        {"pvc": {"size": "-1Gi"}},
        "output.pvc.size must be a positive quantity",
    ),
    (
        "datagen-limit-negative",
        "spec.datagen",
        {"resources": {"limits": {"nvidia.com/gpu": -1}}},
        "non-negative",
    ),
    (
        "train-request-negative",
        "spec.training",
        {"resources": {"requests": {"memory": "-1Gi"}}},
        "non-negative",
    ),
    ("warmup-huge", "spec.training", {"warmupSteps": 10**12}, "should be less than or equal to 100000000"),
    ("seed-negative", "spec.training", {"seed": -1}, "should be greater than or equal to 0"),
    (
        "max-samples-zero",
        "spec.data",
        {"datasets": [{"uri": DATASET}], "maxSamples": 0},
        "greater than or equal to 1",
    ),
    (
        "draft-vocab-huge",
        "spec.training",
        {"draftVocabSize": 10**9},
        "should be less than or equal to 4194304",
    ),
    (
        "deploy-env-token",
        "spec.deploy",
        {"vllm": {"env": [{"name": "HF_TOKEN", "value": "hf_x"}]}},
        "env HF_TOKEN looks like a credential",
    ),
    ("deploy-extra-arg", "spec.deploy", {"vllm": {"extraArgs": ["--tensor_parallel_size=2"]}}, "sets a flag"),
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
    # trainLmHead false states what eagle does anyway: accepted
    frozen = _set(training_body("eagle-frozen"), "spec.training", {"trainLmHead": False})
    kube_api.create(_set(frozen, "spec.algorithm", "eagle"), namespace)


def test_eagle_training_has_no_lm_head_to_train(kube_api, namespace, operator_crds):
    body = _set(
        _set(training_body("valid"), "spec.algorithm", "eagle"), "spec.training", {"trainLmHead": True}
    )
    _reject(kube_api, namespace, body, "borrows the verifier's lm_head and has none to train")


def test_eagle_training_cannot_deploy(kube_api, namespace, operator_crds):
    body = _set(_set(training_body("valid"), "spec.algorithm", "eagle"), "spec.deploy", {})
    _reject(kube_api, namespace, body, "deploy needs algorithm eagle3")


LOOP_RETRAIN = {"when": {"dropFraction": 0.2}, "template": {}}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"backend": "kserve", "traffic": {"capture": {"enabled": True}}},
            "traffic.capture needs backend deployment",
        ),
        ({"retrain": LOOP_RETRAIN}, "retrain trains on retrain.template.data or on the captured traffic"),
        (
            {"traffic": {"capture": {"enabled": True, "port": 8000}}},
            "traffic.capture.port must differ from vllm.port",
        ),
        (
            {
                "retrain": {
                    **LOOP_RETRAIN,
                    "template": {"algorithm": "eagle", "data": {"datasets": [{"uri": DATASET}]}},
                }
            },
            "retrain.template.algorithm must be eagle3 or dflash",
        ),
        (
            {
                "retrain": {
                    **LOOP_RETRAIN,
                    "template": {
                        "algorithm": "dflash",
                        "data": {"datasets": [{"uri": DATASET}]},
                        "training": {"numSpeculativeTokens": 8, "dflash": {"blockSize": 8}},
                    },
                }
            },
            "must be below training.dflash.blockSize",
        ),
    ],
    ids=[
        "capture-on-kserve",
        "retrain-without-data",
        "capture-port-is-vllm-port",
        "retrain-eagle",
        "retrain-dflash-k",
    ],
)
def test_the_loops_rules(kube_api, namespace, operator_crds, spec, message):
    body = speculator_body("valid")
    body["spec"].update(spec)
    _reject(kube_api, namespace, body, message)


def test_a_dflash_retrain_is_accepted(kube_api, namespace, operator_crds):
    body = speculator_body("dflash-loop")
    retrain = {**LOOP_RETRAIN, "template": {"algorithm": "dflash", "data": {"datasets": [{"uri": DATASET}]}}}
    body["spec"].update(retrain=retrain)
    created = kube_api.create(body, namespace)
    assert created["spec"]["retrain"]["template"]["training"]["dflash"]["blockSize"] == 16


def test_a_retrain_on_kserve_with_its_own_data_is_accepted(kube_api, namespace, operator_crds):
    body = speculator_body("kserve-loop")
    retrain = {**LOOP_RETRAIN, "template": {"data": {"datasets": [{"uri": DATASET}]}}}
    body["spec"].update(backend="kserve", retrain=retrain)
    kube_api.create(body, namespace)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"route": {"enabled": True}}, "backend llmisvc is exposed by its own router"),
        ({"vllm": {"port": 8080}}, "serves vLLM on port 8000"),
        ({"cache": {"size": "100Gi"}}, "KServe's template owns the model cache"),
        (
            {"retrain": {**LOOP_RETRAIN, "template": {"data": {"datasets": [{"uri": DATASET}]}}}},
            "retrain (drift, canary) is built for backends deployment and kserve",
        ),
    ],
    ids=["route", "port", "cache", "retrain"],
)
def test_the_llmisvc_rules(kube_api, namespace, operator_crds, spec, message):
    body = speculator_body("valid")
    body["spec"].update(backend="llmisvc", **spec)
    _reject(kube_api, namespace, body, message)


def test_an_llmisvc_speculator_with_its_router_and_presets_is_accepted(kube_api, namespace, operator_crds):
    body = speculator_body("llmisvc-ok")
    body["spec"].update(backend="llmisvc", llmisvc={"router": {"route": {}}, "baseRefs": ["preset"]})
    created = kube_api.create(body, namespace)
    assert created["spec"]["llmisvc"]["router"] == {"route": {}}  # kept as written (preserve unknown fields)


def _benchmark_body(name: str = "bench") -> dict[str, Any]:
    return {
        "apiVersion": "speculators.ai/v1alpha1",
        "kind": "SpeculatorBenchmark",
        "metadata": {"name": name},
        "spec": {"speculatorRef": {"name": "llama"}},
    }


BENCHMARK_CASES = [
    ("constant-no-rates", "spec.rate", {"type": "constant"}, "rate.rates (requests/s) is required"),
    ("sweep-with-rates", "spec.rate", {"type": "sweep", "rates": [1]}, "rate.rates applies to rate.type"),
    ("zero-rate", "spec.rate", {"type": "poisson", "rates": [0]}, "rate.rates must all be above 0"),
    ("small-sweep", "spec.rate", {"sweepSize": 2}, "should be greater than or equal to 3"),
    ("no-baseline", "spec.baseline", {"create": False}, "baseline needs exactly one of create: true"),
    (
        "two-baselines",
        "spec.baseline",
        {"url": "http://b:8000"},
        "baseline needs exactly one of create: true",
    ),
    (
        "baseline-url",
        "spec.baseline",
        {"create": False, "url": "b:8000"},
        "must be an http:// or https:// URL",
    ),
    ("s3-dataset", "spec.dataset", {"uri": "s3://bucket/prompts"}, "dataset.uri must be hf://org/dataset"),
    (
        "two-datasets",
        "spec.dataset",
        {"uri": "hf://a/b", "synthetic": {"promptTokens": 8}},
        "dataset takes one of uri, builtin or synthetic",
    ),
    ("builtin-and-uri", "spec.dataset", {"uri": "hf://a/b", "builtin": "code"}, "dataset takes one of uri"),
    ("unknown-builtin", "spec.dataset", {"builtin": "poems"}, "Unsupported value"),
    ("output-tokens", "spec.dataset", {"uri": "hf://a/b", "outputTokens": 64}, "applies to builtin prompts"),
    ("bad-speculator", "spec.speculatorRef", {"name": "Not_A_Name"}, "must be a Speculator name"),
    ("long-name", "metadata.name", "b" * 53, "at most 52 characters"),
]


@pytest.mark.parametrize(
    ("case", "path", "value", "message"), BENCHMARK_CASES, ids=[c[0] for c in BENCHMARK_CASES]
)
def test_invalid_benchmark(kube_api, namespace, operator_crds, case, path, value, message):
    _reject(kube_api, namespace, _set(_benchmark_body(), path, value), message)


def test_a_benchmark_is_immutable_once_created(kube_api, namespace, operator_crds):
    kube_api.create(_benchmark_body("once"), namespace)  # the base of the cases above is valid
    with pytest.raises(ApiException) as info:
        kube_api.patch(
            "speculators.ai/v1alpha1", "SpeculatorBenchmark", "once", {"spec": {"maxSeconds": 5}}, namespace
        )
    assert info.value.status == 422
    assert "spec is immutable: a benchmark is one run" in json.loads(info.value.body)["message"]


def test_a_dflash_training_with_the_recipe_is_accepted(kube_api, namespace, operator_crds):
    body = _set(training_body("dflash-ok"), "spec.algorithm", "dflash")
    created = kube_api.create(body, namespace)
    assert created["spec"]["training"]["dflash"]["blockSize"] == 16  # the schema's default
    assert "numSpeculativeTokens" not in created["spec"]["training"]  # resolved per algorithm
