"""Every pod template the operator can render passes Pod Security "restricted" and OpenShift restricted-v2:
all Job kinds of a training (single- and multi-node, offline and online, every source kind, publishing to
both targets), the resolve Job, the vLLM Deployment, the KServe predictor pod, a benchmark's Job and
baseline, over a matrix of specs.

First check: the rules as code (pod_rules.violations). Second, independent check: the real PodSecurity
admission of the test API server, in a namespace that enforces "restricted" (server-side dry-run of a Pod
made from each template).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from localrun.kserve_standin import llmisvc_pod
from localrun.trainer_standin import job_of
from pod_rules import kserve_predictor_pod, violations
from shiplib import speculator_body, training_body

from speculators_operator.api.common import ModelSource
from speculators_operator.render import benchmark as bench
from speculators_operator.render import kserve, llmisvc
from speculators_operator.render import speculator as spd
from speculators_operator.render.common import Images
from speculators_operator.render.training import TrainingContext, step_hashes, step_job, steps_for
from speculators_operator.render.trainjob import cluster_training_runtime

IMAGES = Images(runtime="registry.example/runtime:1", vllm="registry.example/vllm:1")
SERVICE_ACCOUNTS = ("trainer", "models")
PRIORITY_CLASS = "speculators-test-batch"
LLMISVC_PRESET = (
    Path(__file__).resolve().parents[1] / "fixtures" / "kserve_config-llm-template.yaml"
).read_text()

TRAININGS: dict[str, dict[str, Any]] = {
    "offline-defaults": {},
    "online-multinode-s3-publish": {
        "verifier": {"uri": "s3://models/llama-3.1-8b", "secretRef": {"name": "s3-creds"}},
        "data": {
            "datasets": [
                {"uri": "s3://corpora/chat", "secretRef": {"name": "s3-creds"}},
                {"uri": "pvc://datasets/sharegpt.jsonl"},
                {
                    "uri": "hf://HuggingFaceH4/ultrachat_200k",
                    "split": "train_sft",
                    "secretRef": {"name": "hf"},
                },
            ],
            "regenerateResponses": True,
            "regenerateEndpoint": "http://vllm.models.svc:8000/v1",
        },
        "training": {"mode": "online", "nodes": 2, "gpusPerNode": 4, "fsdp": True},
        "output": {
            "pvc": {"claimName": "shared-workspace"},
            "s3": {"uri": "s3://drafts/llama", "secretRef": {"name": "s3-creds"}},
            "hub": {"repo": "org/llama-eagle3", "secretRef": {"name": "hf"}},
        },
        "image": {"pullSecrets": [{"name": "regcred"}], "pullPolicy": "Always"},
        "scheduling": {
            "nodeSelector": {"gpu": "h100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "serviceAccountName": "trainer",
            "priorityClassName": PRIORITY_CLASS,
        },
        "podMetadata": {"labels": {"team": "ml"}, "annotations": {"sidecar.istio.io/inject": "false"}},
    },
    "pvc-verifier-eagle": {
        "verifier": {"uri": "pvc://models/llama-3.1-8b"},
        "algorithm": "eagle",
        "datagen": {"shards": 3},
    },
}

HUB_DRAFT = {"uri": "hf://RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3", "secretRef": {"name": "hf"}}
SPECULATORS: dict[str, tuple[dict[str, Any], ModelSource]] = {
    "hub-resolve": (
        {
            "draft": HUB_DRAFT,
            "method": None,
            "numSpeculativeTokens": None,
            "verifier": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct", "secretRef": {"name": "hf"}},
        },
        ModelSource(uri=HUB_DRAFT["uri"], secret_ref={"name": "hf"}),
    ),
    "training-draft-cache-tp2": (
        {
            "draft": {"trainingRef": {"name": "llama"}},
            "cache": {"size": "200Gi"},
            "replicas": 2,
            "vllm": {"tensorParallelSize": 2},
        },
        ModelSource(uri="pvc://llama-workspace/llama/model"),
    ),
    "s3-verifier-pvc-draft": (
        {
            "verifier": {"uri": "s3://models/llama", "secretRef": {"name": "s3-creds"}},
            "draft": {"uri": "pvc://drafts/llama-eagle3"},
            "scheduling": {"serviceAccountName": "models", "nodeSelector": {"gpu": "h100"}},
            "podMetadata": {"labels": {"team": "ml"}},
            "vllm": {
                "env": [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}],
                "extraArgs": ["--enable-prefix-caching"],
            },
        },
        ModelSource(uri="pvc://drafts/llama-eagle3"),
    ),
}


def _training_pods() -> list[tuple[str, dict[str, Any], bool]]:
    out = []
    for key, spec in TRAININGS.items():
        ctx = TrainingContext.of(training_body(**spec), IMAGES)
        hashes = step_hashes(ctx)
        for step in steps_for(ctx.spec):
            out.append(
                (f"{key}/{step}", step_job(ctx, step, hashes[step])["spec"]["template"]["spec"], False)
            )
    return out


def _speculator_pods() -> list[tuple[str, dict[str, Any], bool]]:
    out = []
    cases = dict(SPECULATORS)
    cases["root-image-override"] = (
        {"securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000}},
        ModelSource(uri=HUB_DRAFT["uri"]),
    )
    for key, (spec, source) in cases.items():
        override = "securityContext" in spec
        for backend in ("deployment", "kserve", "llmisvc"):
            body = speculator_body(**{k: v for k, v in spec.items() if v is not None}, backend=backend)
            for field in ("method", "numSpeculativeTokens"):
                if spec.get(field, "") is None:
                    body["spec"].pop(field, None)
            ctx = spd.SpeculatorContext.of(body, IMAGES)
            draft = spd.ResolvedDraft(source, "eagle3", 3)
            if spd.needs_resolve(ctx):
                out.append(
                    (f"{key}/{backend}/resolve", spd.resolve_job(ctx)["spec"]["template"]["spec"], override)
                )
            if backend == "deployment":
                out.append(
                    (f"{key}/deployment", spd.deployment(ctx, draft)["spec"]["template"]["spec"], override)
                )
            elif backend == "kserve":
                pod = kserve_predictor_pod(
                    kserve.serving_runtime(ctx, draft), kserve.inference_service(ctx, draft)
                )
                out.append((f"{key}/kserve-predictor", pod, override))
            else:  # KServe's own preset with our LLMInferenceService merged over it
                pod = llmisvc_pod(LLMISVC_PRESET, llmisvc.llm_inference_service(ctx, draft))
                out.append((f"{key}/llmisvc-main", pod, override))
    return out


def _loop_pods() -> list[tuple[str, dict[str, Any], bool]]:
    """The capture proxy next to vLLM, and the canary Deployment of a retrained draft."""
    body = speculator_body(
        method="eagle3",
        numSpeculativeTokens=3,
        traffic={"capture": {"enabled": True}},
        retrain={"when": {"dropFraction": 0.2}},
    )
    ctx = spd.SpeculatorContext.of(body, IMAGES)
    draft = spd.ResolvedDraft(ModelSource(uri="pvc://chat-r1-workspace/chat-r1/model"), "eagle3", 3)
    return [
        ("capture/deployment", spd.deployment(ctx, draft)["spec"]["template"]["spec"], False),
        ("capture/canary", spd.deployment(ctx, draft, canary=True)["spec"]["template"]["spec"], False),
    ]


def _trainjob_pods() -> list[tuple[str, dict[str, Any], bool]]:
    """The train step as a TrainJob, run as Trainer runs it on the chart's ClusterTrainingRuntime."""
    body = training_body(training={"runtime": "trainjob", "nodes": 2, "gpusPerNode": 4})
    ctx = TrainingContext.of(body, IMAGES)
    trainjob = step_job(ctx, "train", step_hashes(ctx)["train"])
    trainjob["metadata"].update(namespace="ns", uid="u")
    runtime = cluster_training_runtime("speculators-torchrun", IMAGES.runtime, "IfNotPresent")
    return [("trainjob/train", job_of(trainjob, runtime)["spec"]["template"]["spec"], False)]


def _benchmark_pods() -> list[tuple[str, dict[str, Any], bool]]:
    """A SpeculatorBenchmark's Job (GuideLLM, report) and its baseline, of a capturing Speculator."""
    served = speculator_body(
        method="eagle3", numSpeculativeTokens=3, traffic={"capture": {"enabled": True}}, cache={"size": "9Gi"}
    )
    served["metadata"].update(namespace="ns", uid="u1")
    body = {
        "apiVersion": "speculators.ai/v1alpha1",
        "kind": "SpeculatorBenchmark",
        "metadata": {"name": "b", "namespace": "ns", "uid": "u2"},
        "spec": {"speculatorRef": {"name": "llama"}, "dataset": {"uri": "pvc://prompts/chat.jsonl"}},
    }
    ctx = bench.BenchmarkContext.of(body, IMAGES)
    draft = spd.ResolvedDraft(ModelSource(uri="pvc://drafts/llama-eagle3"), "eagle3", 3)
    served_spec = spd.SpeculatorContext.of(served).spec
    job = bench.benchmark_job(
        ctx, served_spec, speculator_url="http://a:8000", baseline_url="http://b:8000", model="m"
    )
    return [
        ("benchmark/job", job["spec"]["template"]["spec"], False),
        (
            "benchmark/baseline",
            bench.baseline_deployment(ctx, served, draft)["spec"]["template"]["spec"],
            False,
        ),
    ]


PODS = _training_pods() + _speculator_pods() + _loop_pods() + _trainjob_pods() + _benchmark_pods()


def test_the_matrix_covers_every_kind_of_pod() -> None:
    names = {n.rsplit("/", 1)[-1] for n, _, _ in PODS}
    assert {
        "prepare",
        "datagen",
        "train",
        "eval",
        "publish",
        "resolve",
        "deployment",
        "kserve-predictor",
        "llmisvc-main",
        "canary",
        "job",
        "baseline",
    } <= names
    assert "trainjob/train" in {n for n, _, _ in PODS}
    assert any(p.get("subdomain") for _, p, _ in PODS)  # a multi-node training pod
    assert any(p.get("initContainers") for _, p, _ in PODS)


@pytest.mark.parametrize(("name", "pod", "override"), PODS, ids=[n for n, _, _ in PODS])
def test_pod_passes_restricted_and_restricted_v2(name: str, pod: dict[str, Any], override: bool) -> None:
    assert violations(pod, uid_overrides_allowed=override) == []
    if not override:
        assert "runAsUser" not in (pod.get("securityContext") or {})


def test_the_checker_catches_what_it_should() -> None:
    """The rules are not vacuous: each mutation of a good pod is reported."""
    _, good, _ = PODS[0]
    assert violations(good) == []
    bad = [
        {**good, "hostNetwork": True},
        {**good, "securityContext": {**good["securityContext"], "runAsUser": 1000}},
        {**good, "volumes": [*good["volumes"], {"name": "h", "hostPath": {"path": "/"}}]},
        {**good, "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}},
        {
            **good,
            "containers": [{**good["containers"][0], "securityContext": {"capabilities": {"drop": ["ALL"]}}}],
        },
        {
            **good,
            "containers": [{**good["containers"][0], "securityContext": {"allowPrivilegeEscalation": False}}],
        },
    ]
    for pod in bad:
        assert violations(pod), pod


@pytest.mark.kwok
def test_pod_security_admission_accepts_every_template(kube_api: Any, namespace: str) -> None:
    """The real PodSecurity admission (namespace enforces restricted, latest): server-side dry-run."""
    for sa in SERVICE_ACCOUNTS:  # the ServiceAccount and Priority admission plugins need them to exist
        kube_api.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}}, namespace)
    priority = {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": PRIORITY_CLASS},
    }
    kube_api.apply({**priority, "value": 1000})
    for i, (name, pod_spec, _) in enumerate(PODS):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"template-{i}"}, "spec": pod_spec}
        try:
            kube_api.create(pod, namespace, dry_run=True)
        except Exception as exc:
            raise AssertionError(f"{name}: {getattr(exc, 'body', exc)}") from exc


@pytest.mark.kwok
def test_pod_security_admission_refuses_what_the_checker_refuses(kube_api: Any, namespace: str) -> None:
    _, good, _ = PODS[0]
    bad = {**good, "volumes": [*good["volumes"], {"name": "h", "hostPath": {"path": "/"}}]}
    with pytest.raises(Exception, match="hostPath"):
        kube_api.create(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"}, "spec": bad},
            namespace,
            dry_run=True,
        )
