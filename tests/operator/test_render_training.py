"""The Jobs of a SpeculatorTraining, field by field, against the CLI contract (docs/architecture.md)."""

from __future__ import annotations

import pytest
from spd_testlib import training

from speculators_operator.render.common import Images
from speculators_operator.render.training import (
    TrainingContext,
    deploy_speculator,
    step_hashes,
    step_job,
    steps_for,
    train_service,
    workspace_pvc,
)

IMAGES = Images(runtime="registry.example/runtime:1", vllm="registry.example/vllm:1")
SCRATCH_ENV = [
    {"name": "HOME", "value": "/scratch/home"},
    {"name": "HF_HOME", "value": "/scratch/hf"},
    {"name": "XDG_CACHE_HOME", "value": "/scratch/cache"},
    {"name": "TRITON_CACHE_DIR", "value": "/scratch/cache/triton"},
    {"name": "VLLM_CACHE_ROOT", "value": "/scratch/cache/vllm"},
    {"name": "TORCHINDUCTOR_CACHE_DIR", "value": "/scratch/cache/inductor"},
]
BASE_MOUNTS = [{"name": "scratch", "mountPath": "/scratch"}, {"name": "dshm", "mountPath": "/dev/shm"}]
WS_MOUNT = {"name": "workspace", "mountPath": "/workspace"}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
LABELS = {
    "app.kubernetes.io/name": "speculator-training",
    "app.kubernetes.io/managed-by": "speculators-operator",
    "app.kubernetes.io/part-of": "speculators",
    "speculators.ai/training": "llama",
}


def _ctx(**spec) -> TrainingContext:
    body = training("llama", **spec)
    body["metadata"]["labels"] = {"app.kubernetes.io/instance": "argo-app", "argocd.argoproj.io/x": "y"}
    return TrainingContext.of(body, IMAGES)


def _job(ctx: TrainingContext, step: str) -> dict:
    return step_job(ctx, step, step_hashes(ctx)[step])


def test_prepare_job_field_by_field():
    ctx = _ctx(
        verifier={
            "uri": "hf://meta-llama/Llama-3.1-8B-Instruct",
            "revision": "main",
            "secretRef": {"name": "hf"},
        },
        data={
            "datasets": [
                {"uri": "hf://HuggingFaceH4/ultrachat_200k", "split": "train_sft"},
                {"uri": "s3://corpora/chat/v2", "secretRef": {"name": "aws"}},
                {"uri": "pvc://datasets/sharegpt.jsonl"},
            ],
            "maxSamples": 5000,
            "regenerateResponses": True,
            "regenerateEndpoint": "http://vllm:8000/v1",
        },
        podMetadata={"labels": {"team": "ml"}, "annotations": {"sim.speculators.ai/hold": "true"}},
        scheduling={
            "nodeSelector": {"gpu": "h100"},
            "tolerations": [{"key": "gpu", "operator": "Exists"}],
            "priorityClassName": "batch",
            "serviceAccountName": "trainer",
        },
        image={"pullSecrets": [{"name": "regcred"}], "pullPolicy": "Always"},
    )
    job = _job(ctx, "prepare")
    meta = job["metadata"]
    assert meta["name"] == "llama-prepare" and meta["namespace"] == "ns"
    assert meta["labels"] == {
        **LABELS,
        "app.kubernetes.io/instance": "llama-prepare",
        "app.kubernetes.io/component": "prepare",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "speculators.ai/v1alpha1",
            "kind": "SpeculatorTraining",
            "name": "llama",
            "uid": "uid-llama",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["annotations"] == {
        "speculators.ai/spec-hash": step_hashes(ctx)["prepare"],
        "speculators.ai/step": "prepare",
    }
    spec = job["spec"]
    assert spec["backoffLimit"] == 3
    assert spec["ttlSecondsAfterFinished"] == 3600
    assert spec["podFailurePolicy"] == {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2, 3]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }
    template = spec["template"]
    assert template["metadata"] == {
        "labels": {"team": "ml", **meta["labels"]},
        "annotations": {"sim.speculators.ai/hold": "true"},
    }
    pod = template["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert pod["priorityClassName"] == "batch" and pod["serviceAccountName"] == "trainer"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["volumes"] == [
        {"name": "scratch", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "workspace", "persistentVolumeClaim": {"claimName": "llama-workspace"}},
        {"name": "pvc-datasets", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}},
    ]
    fetch_verifier, fetch_data = pod["initContainers"]
    assert fetch_verifier == {
        "name": "fetch-verifier",
        "image": "registry.example/runtime:1",
        "imagePullPolicy": "Always",
        "command": ["speculators", "fetch"],
        "args": [
            "hf://meta-llama/Llama-3.1-8B-Instruct",
            "--dest",
            "/workspace/llama/verifier",
            "--revision",
            "main",
            "--summary-path",
            "/dev/termination-log",
        ],
        "env": SCRATCH_ENV,
        "resources": {},
        "securityContext": RESTRICTED_CONTAINER,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [*BASE_MOUNTS, WS_MOUNT],
        "envFrom": [{"secretRef": {"name": "hf"}}],
    }
    assert fetch_data["name"] == "fetch-data-1"
    assert fetch_data["args"] == [
        "s3://corpora/chat/v2",
        "--dest",
        "/workspace/llama/sources/1",
        "--summary-path",
        "/dev/termination-log",
    ]
    assert fetch_data["envFrom"] == [{"secretRef": {"name": "aws"}}]
    (main,) = pod["containers"]
    assert main["name"] == "prepare"
    assert main["command"] == ["speculators", "prepare-data"]
    assert main["args"] == [
        "--verifier",
        "/workspace/llama/verifier",
        "--data",
        "hf://HuggingFaceH4/ultrachat_200k?split=train_sft",
        "--data",
        "/workspace/llama/sources/1",
        "--data",
        "/mnt/pvc/datasets/sharegpt.jsonl",
        "--output",
        "/workspace/llama/data",
        "--max-length",
        "2048",
        "--max-samples",
        "5000",
        "--regenerate-responses",
        "--endpoint",
        "http://vllm:8000/v1",
        "--reasoning",
        "keep",
        "--holdout-fraction",
        "0.05",
        "--seed",
        "42",
        "--summary-path",
        "/dev/termination-log",
    ]
    # The verifier's hub token also reaches gated Hub datasets; never as an argument.
    assert main["envFrom"] == [{"secretRef": {"name": "hf"}}]
    assert main["resources"] == {"requests": {"cpu": "4", "memory": "16Gi"}}
    assert main["securityContext"] == RESTRICTED_CONTAINER
    assert main["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert main["volumeMounts"] == [
        *BASE_MOUNTS,
        WS_MOUNT,
        {"name": "pvc-datasets", "mountPath": "/mnt/pvc/datasets", "readOnly": True},
    ]


def test_parent_labels_are_never_copied():
    ctx = _ctx()
    for step in steps_for(ctx.spec):
        job = _job(ctx, step)
        for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
            assert labels["app.kubernetes.io/instance"] == f"llama-{step}"
            assert not any(k.startswith("argocd.argoproj.io") for k in labels)


def test_datagen_is_an_indexed_job_one_pod_per_shard():
    ctx = _ctx(datagen={"shards": 8, "layerIds": [2, 16, 29], "dtype": "float8"})
    job = _job(ctx, "datagen")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 8
    assert spec["backoffLimitPerIndex"] == 3 and "backoffLimit" not in spec
    (main,) = spec["template"]["spec"]["containers"]
    assert main["command"] == ["speculators", "datagen"]
    assert main["args"] == [
        "--verifier",
        "/workspace/llama/verifier",
        "--data",
        "/workspace/llama/data",
        "--output",
        "/workspace/llama/hidden_states",
        "--num-shards",
        "8",
        "--layer-ids",
        "2,16,29",
        "--dtype",
        "float8",
        "--summary-path",
        "/dev/termination-log",
    ]
    assert main["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert "initContainers" not in spec["template"]["spec"]  # the verifier was fetched by prepare


def test_single_gpu_train_job():
    ctx = _ctx(
        training={
            "epochs": 5,
            "learningRate": 3e-5,
            "draftVocabSize": 32000,
            "checkpointEverySteps": 500,
            "maxRetries": 7,
        }
    )
    job = _job(ctx, "train")
    spec = job["spec"]
    assert spec["backoffLimit"] == 7  # retries resume from /workspace/llama/checkpoints
    assert "completionMode" not in spec
    (main,) = spec["template"]["spec"]["containers"]
    assert main["command"] == ["speculators", "train"]
    assert main["args"] == [
        "--verifier",
        "/workspace/llama/verifier",
        "--data",
        "/workspace/llama/data",
        "--hidden-states",
        "/workspace/llama/hidden_states",
        "--output",
        "/workspace/llama/model",
        "--checkpoint-dir",
        "/workspace/llama/checkpoints",
        "--algorithm",
        "eagle3",
        "--epochs",
        "5",
        "--lr",
        "3e-05",
        "--scheduler",
        "cosine",
        "--warmup-steps",
        "0",
        "--ttt-steps",
        "3",
        "--loss",
        "kl",
        "--step-weighting",
        "acceptance",
        "--draft-vocab-size",
        "32000",
        "--num-layers",
        "1",
        "--num-speculative-tokens",
        "3",
        "--checkpoint-every-steps",
        "500",
        "--seed",
        "42",
        "--summary-path",
        "/dev/termination-log",
    ]
    assert main["resources"] == {"limits": {"nvidia.com/gpu": 1}}


def test_multi_node_train_is_indexed_with_torchrun_and_a_headless_service():
    ctx = _ctx(training={"nodes": 4, "gpusPerNode": 8, "fsdp": True, "mode": "online"})
    job = _job(ctx, "train")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 4
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == "llama-train"
    (main,) = pod["containers"]
    assert main["command"] == ["torchrun"]
    assert main["args"][:8] == [
        "--nnodes=$(NNODES)",
        "--nproc-per-node=$(NPROC_PER_NODE)",
        "--node-rank=$(NODE_RANK)",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
        "-m",
        "speculators_core.cli",
        "train",
    ]
    assert "--online" in main["args"] and "--fsdp" in main["args"] and "--hidden-states" not in main["args"]
    env = {e["name"]: e for e in main["env"]}
    assert env["MASTER_ADDR"]["value"] == "llama-train-0.llama-train"
    assert env["MASTER_PORT"]["value"] == "29500"
    assert env["NNODES"]["value"] == "4" and env["NPROC_PER_NODE"]["value"] == "8"
    assert env["NODE_RANK"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
    }
    assert main["resources"] == {"limits": {"nvidia.com/gpu": 8}}
    svc = train_service(ctx)
    assert svc["metadata"]["name"] == "llama-train"
    assert svc["spec"] == {
        "clusterIP": "None",
        "publishNotReadyAddresses": True,
        "selector": {"app.kubernetes.io/instance": "llama-train", "speculators.ai/training": "llama"},
        "ports": [{"name": "rendezvous", "port": 29500, "targetPort": 29500}],
    }
    assert steps_for(ctx.spec) == ["prepare", "train", "eval"]  # online: no datagen


def test_eval_and_publish_jobs():
    ctx = _ctx(
        output={
            "s3": {"uri": "s3://models/llama-eagle3", "secretRef": {"name": "aws"}},
            "hub": {"repo": "acme/llama-eagle3", "secretRef": {"name": "hf-write"}},
        },
        evaluation={"maxSamples": 64},
    )
    assert steps_for(ctx.spec) == ["prepare", "datagen", "train", "eval", "publish"]
    (evaluate,) = _job(ctx, "eval")["spec"]["template"]["spec"]["containers"]
    assert evaluate["args"] == [
        "--verifier",
        "/workspace/llama/verifier",
        "--draft",
        "/workspace/llama/model",
        "--data",
        "/workspace/llama/data",
        "--num-speculative-tokens",
        "3",
        "--max-speculative-tokens",
        "8",
        "--prompt-set",
        "/workspace/eval-prompts/meta-llama-Llama-3.1-8B-Instruct.jsonl",
        "--max-samples",
        "64",
        "--summary-path",
        "/dev/termination-log",
    ]
    pod = _job(ctx, "publish")["spec"]["template"]["spec"]
    (s3,) = pod["initContainers"]
    (hub,) = pod["containers"]
    assert s3["args"] == [
        "/workspace/llama/model",
        "--to",
        "s3://models/llama-eagle3",
        "--summary-path",
        "/dev/termination-log",
    ]
    assert s3["envFrom"] == [{"secretRef": {"name": "aws"}}]
    assert hub["args"] == [
        "/workspace/llama/model",
        "--to",
        "hf://acme/llama-eagle3",
        "--private",
        "--summary-path",
        "/dev/termination-log",
    ]
    assert hub["envFrom"] == [{"secretRef": {"name": "hf-write"}}]


def test_pvc_verifier_is_mounted_not_fetched():
    ctx = _ctx(verifier={"uri": "pvc://models/llama-3.1-8b"})
    pod = _job(ctx, "prepare")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert pod["containers"][0]["args"][:2] == ["--verifier", "/mnt/pvc/models/llama-3.1-8b"]
    assert {"name": "pvc-models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod[
        "volumes"
    ]


def test_workspace_pvc_and_existing_claim():
    pvc = workspace_pvc(
        _ctx(output={"pvc": {"size": "1Ti", "storageClassName": "fast", "accessMode": "ReadWriteMany"}})
    )
    assert pvc["metadata"]["name"] == "llama-workspace"
    assert pvc["metadata"]["labels"]["app.kubernetes.io/component"] == "workspace"
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "1Ti"}},
        "storageClassName": "fast",
    }
    ctx = _ctx(output={"pvc": {"claimName": "shared"}})
    assert workspace_pvc(ctx) is None
    assert _job(ctx, "train")["spec"]["template"]["spec"]["volumes"][2] == {
        "name": "workspace",
        "persistentVolumeClaim": {"claimName": "shared"},
    }
    assert ctx.artifact_uri == "pvc://shared/llama/model"


def test_hashes_chain_and_ignore_scheduling():
    a = step_hashes(_ctx())
    b = step_hashes(_ctx(training={"epochs": 3}))
    assert a["prepare"] == b["prepare"] and a["datagen"] == b["datagen"]
    assert a["train"] != b["train"] and a["eval"] != b["eval"]  # eval follows the model it evaluates
    c = step_hashes(_ctx(scheduling={"nodeSelector": {"x": "y"}}, training={"maxRetries": 9}))
    assert c == a


@pytest.mark.parametrize("deploy_name", [None, "llama-serve"])
def test_deploy_speculator(deploy_name):
    deploy = {"replicas": 2, "vllm": {"maxModelLen": 8192}}
    if deploy_name:
        deploy["name"] = deploy_name
    ctx = _ctx(deploy=deploy)
    child = deploy_speculator(ctx)
    assert child["kind"] == "Speculator" and child["metadata"]["name"] == (deploy_name or "llama")
    assert child["metadata"]["labels"]["app.kubernetes.io/component"] == "deploy"
    assert child["spec"]["draft"] == {"trainingRef": {"name": "llama"}}
    assert child["spec"]["verifier"] == {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"}
    assert child["spec"]["replicas"] == 2 and child["spec"]["vllm"]["maxModelLen"] == 8192
    assert "name" not in child["spec"]
