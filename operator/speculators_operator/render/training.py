"""Children of a SpeculatorTraining: workspace PVC, one Job per step, headless Service, deploy Speculator.

The Jobs run the `speculators` CLI exactly as docs/architecture.md's CLI contract spells it; each
writes its summary JSON to /dev/termination-log, which the status layer reads back.
"""

from __future__ import annotations

from typing import Any

from speculators_core.sources import parse_source
from speculators_operator import constants as c
from speculators_operator.api.training import SpeculatorTrainingSpec, resolved_k, resolved_num_layers
from speculators_operator.render import common as r
from speculators_operator.render import trainjob

STEPS = ("prepare", "datagen", "train", "eval", "publish")
COMPONENTS = {"workspace", *STEPS, "deploy"}
PREPARE_DEFAULT_RESOURCES = {"requests": {"cpu": "4", "memory": "16Gi"}}


class TrainingContext(r.ResourceContext[SpeculatorTrainingSpec]):
    """A SpeculatorTraining as the renderer needs it: the raw object (owner refs) and its parsed spec."""

    spec_model = SpeculatorTrainingSpec

    @property
    def claim(self) -> str:
        return self.spec.output.pvc.claim_name or f"{self.name}-workspace"

    @property
    def runtime_image(self) -> str:
        return self.spec.image.runtime or self.images.runtime

    def dir(self, sub: str) -> str:
        """A directory of this training's workspace layout: /workspace/<name>/<sub>."""
        return f"{c.WORKSPACE_MOUNT}/{self.name}/{sub}"

    def cli_container(
        self,
        name: str,
        command: str,
        args: list[str],
        *,
        mounts: list[dict[str, Any]],
        resource_spec: dict[str, Any],
    ) -> dict[str, Any]:
        """A step container running `speculators <command>` from the runtime image."""
        return r.cli_container(
            name,
            self.runtime_image,
            self.spec.image.pull_policy,
            command,
            args,
            mounts=mounts,
            resource_spec=resource_spec,
        )

    @property
    def artifact_uri(self) -> str:
        return f"pvc://{self.claim}/{self.name}/model"


def job_name(name: str, step: str) -> str:
    return f"{name}-{step}"


def steps_for(spec: SpeculatorTrainingSpec) -> list[str]:
    """The steps this spec runs, in order."""
    out = ["prepare"]
    if spec.training.mode == "offline":
        out.append("datagen")
    out += ["train", "eval"]
    if spec.output.s3 or spec.output.hub:
        out.append("publish")
    return out


def step_hashes(ctx: TrainingContext) -> dict[str, str]:
    """Hash of each step's semantic inputs and of the steps before it.

    Scheduling, images and resources are left out on purpose: changing them affects Jobs created later
    but does not throw away finished work.
    """
    spec = ctx.spec
    data = spec.data.wire()
    data.pop("resources", None)
    hashes: dict[str, str] = {}
    hashes["prepare"] = r.spec_hash(
        {"claim": ctx.claim, "verifier": spec.verifier.wire(), "algorithm": spec.algorithm, "data": data}
    )
    previous = hashes["prepare"]
    if spec.training.mode == "offline":
        datagen = spec.datagen.wire()
        datagen.pop("resources", None)
        hashes["datagen"] = r.spec_hash({"after": previous, "datagen": datagen})
        previous = hashes["datagen"]
    training = spec.training.wire()
    for key in ("resources", "maxRetries"):
        training.pop(key, None)
    # Resolved defaults, and the dflash block only for dflash: the hash of an eagle3 training stays what
    # it was when numLayers and numSpeculativeTokens had schema defaults (no re-run on an upgrade).
    training.update(numLayers=resolved_num_layers(spec), numSpeculativeTokens=resolved_k(spec))
    if spec.algorithm != "dflash":
        training.pop("dflash", None)
    # Recipe fields added later are hashed only when set away from their defaults: an upgrade does not
    # re-run a finished training (whose draft keeps the recipe it was trained with).
    if training.get("stepWeighting") == "acceptance":
        training.pop("stepWeighting")
    hashes["train"] = r.spec_hash({"after": previous, "algorithm": spec.algorithm, "training": training})
    evaluation: dict[str, Any] = {
        "after": hashes["train"],
        "maxSamples": spec.evaluation.max_samples,
        "k": resolved_k(spec),
        "maxK": eval_max_k(spec),
        "promptSet": prompt_set_path(ctx),
    }
    if spec.evaluation.temperature:  # hashed only when set: greedy evaluations keep their hash
        evaluation["temperature"] = spec.evaluation.temperature
    hashes["eval"] = r.spec_hash(evaluation)
    if spec.output.s3 or spec.output.hub:
        targets = {
            "s3": spec.output.s3.uri if spec.output.s3 else None,
            "hub": spec.output.hub.repo if spec.output.hub else None,
            "private": spec.output.hub.private if spec.output.hub else None,
        }
        hashes["publish"] = r.spec_hash({"after": hashes["train"], "targets": targets})
    return hashes


def eval_max_k(spec: SpeculatorTrainingSpec) -> int:
    """Tokens drafted per step in evaluation: never fewer than the draft's own k (a DFlash draft: never
    more than a block drafts)."""
    k = resolved_k(spec)
    if spec.algorithm == "dflash":
        return max(min(spec.evaluation.max_speculative_tokens, spec.training.dflash.block_size - 1), k)
    return max(spec.evaluation.max_speculative_tokens, k)


def _slug(text: str) -> str:
    out = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in text)
    return "-".join(part for part in out.split("-") if part)[:120] or "verifier"


def prompt_set_path(ctx: TrainingContext) -> str:
    """The fixed evaluation prompt set, shared by every training of this verifier on the claim."""
    spec = ctx.spec
    if spec.evaluation.prompt_set:
        return f"{c.WORKSPACE_MOUNT}/{spec.evaluation.prompt_set}"
    source = parse_source(spec.verifier.uri)
    name = source.repo_id if source.scheme == "hf" and source.repo_id else spec.verifier.uri.split("://")[-1]
    revision = f"@{spec.verifier.revision}" if spec.verifier.revision else ""
    return f"{c.WORKSPACE_MOUNT}/eval-prompts/{_slug(name + revision)}.jsonl"


def _labels(ctx: TrainingContext, component: str, instance: str) -> dict[str, str]:
    return r.labels(c.APP_TRAINING, component, instance, c.LABEL_TRAINING, ctx.name)


def workspace_pvc(ctx: TrainingContext) -> dict[str, Any] | None:
    """PVC <name>-workspace, unless the user named an existing claim."""
    pvc = ctx.spec.output.pvc
    if pvc.claim_name:
        return None
    name = f"{ctx.name}-workspace"
    return r.claim(
        ctx.body,
        name,
        _labels(ctx, "workspace", name),
        access_mode=pvc.access_mode,
        size=pvc.size,
        storage_class=pvc.storage_class_name,
    )


def train_service(ctx: TrainingContext) -> dict[str, Any] | None:
    """Headless Service giving multi-node training pods stable DNS names (<job>-<index>.<job>); a TrainJob
    gets its own from Trainer."""
    if ctx.spec.training.nodes <= 1 or ctx.spec.training.runtime == "trainjob":
        return None
    name = job_name(ctx.name, "train")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": r.child_metadata(ctx.body, name, _labels(ctx, "train", name)),
        "spec": {
            "clusterIP": "None",
            # torchrun's rendezvous must resolve peers before they pass readiness.
            "publishNotReadyAddresses": True,
            "selector": {c.LABEL_INSTANCE: name, c.LABEL_TRAINING: ctx.name},
            "ports": [{"name": "rendezvous", "port": c.TORCHRUN_PORT, "targetPort": c.TORCHRUN_PORT}],
        },
    }


def _pod_parts(ctx: TrainingContext) -> tuple[r.PodParts, str]:
    """Workspace volume plus the verifier's location (mounted for pvc://, else fetched by `prepare`)."""
    parts = r.PodParts()
    parts.add_volume(
        {"name": "workspace", "persistentVolumeClaim": {"claimName": ctx.claim}},
        {"name": "workspace", "mountPath": c.WORKSPACE_MOUNT},
    )
    verifier = parse_source(ctx.spec.verifier.uri)
    if verifier.scheme == "pvc":
        assert verifier.claim
        root = parts.mount_claim(verifier.claim)
        path = f"{root}/{verifier.path}" if verifier.path else root
    else:
        path = ctx.dir("verifier")
    return parts, path


def _workspace_mounts() -> list[dict[str, Any]]:
    return [{"name": "workspace", "mountPath": c.WORKSPACE_MOUNT}]


def _prepare(ctx: TrainingContext, parts: r.PodParts, verifier: str) -> list[dict[str, Any]]:
    spec = ctx.spec
    pull = spec.image.pull_policy
    if parse_source(spec.verifier.uri).scheme != "pvc":
        r.place_source(
            parts,
            spec.verifier,
            role="verifier",
            dest=verifier,
            image=ctx.runtime_image,
            pull_policy=pull,
            dest_mounts=_workspace_mounts(),
        )
    sources: list[str] = []
    secrets: list[str] = []
    if spec.verifier.secret_ref and spec.verifier.uri.startswith("hf://"):
        secrets.append(spec.verifier.secret_ref.name)  # gated Hub datasets need the same token
    for i, dataset in enumerate(spec.data.datasets):
        parsed = parse_source(dataset.uri)
        secret = dataset.secret_ref.name if dataset.secret_ref else None
        if parsed.scheme == "hf":
            uri = dataset.uri
            if dataset.split and "split=" not in uri:
                uri += ("&" if "?" in uri else "?") + f"split={dataset.split}"
            sources.append(uri)
            if secret:
                secrets.append(secret)
        else:
            sources.append(
                r.place_source(
                    parts,
                    parsed,
                    role=f"data-{i}",
                    dest=ctx.dir(f"sources/{i}"),
                    image=ctx.runtime_image,
                    pull_policy=pull,
                    dest_mounts=_workspace_mounts(),
                    secret=secret,
                )
            )
    args = ["--verifier", verifier]
    for source in sources:
        args += ["--data", source]
    args += ["--output", ctx.dir("data"), "--max-length", str(spec.data.max_length)]
    if spec.data.max_samples is not None:
        args += ["--max-samples", str(spec.data.max_samples)]
    if spec.data.regenerate_responses:
        args.append("--regenerate-responses")
        if spec.data.regenerate_endpoint:
            args += ["--endpoint", spec.data.regenerate_endpoint]
    args += [
        "--reasoning",
        spec.data.reasoning,
        "--holdout-fraction",
        _num(spec.data.holdout_fraction),
        "--seed",
        str(spec.training.seed),
        "--summary-path",
        c.TERMINATION_LOG,
    ]
    container = ctx.cli_container(
        "prepare",
        "prepare-data",
        args,
        mounts=parts.mounts,
        resource_spec=r.resources(spec.data.resources, PREPARE_DEFAULT_RESOURCES),
    )
    if secrets:
        container["envFrom"] = r.env_from(secrets)
    return [container]


def _datagen(ctx: TrainingContext, parts: r.PodParts, verifier: str) -> list[dict[str, Any]]:
    spec = ctx.spec
    args = [
        "--verifier",
        verifier,
        "--data",
        ctx.dir("data"),
        "--output",
        ctx.dir("hidden_states"),
        "--num-shards",
        str(spec.datagen.shards),
    ]
    if spec.datagen.layer_ids:
        args += ["--layer-ids", ",".join(str(i) for i in spec.datagen.layer_ids)]
    args += ["--dtype", spec.datagen.dtype, "--summary-path", c.TERMINATION_LOG]
    # --shard-index comes from $JOB_COMPLETION_INDEX, which the Indexed Job sets.
    return [
        ctx.cli_container(
            "datagen",
            "datagen",
            args,
            mounts=parts.mounts,
            resource_spec=r.resources(spec.datagen.resources, r.gpu_limits(1)),
        )
    ]


def _train_args(ctx: TrainingContext, verifier: str) -> list[str]:
    t = ctx.spec.training
    args = ["--verifier", verifier, "--data", ctx.dir("data")]
    args += ["--hidden-states", ctx.dir("hidden_states")] if t.mode == "offline" else ["--online"]
    args += [
        "--output",
        ctx.dir("model"),
        "--checkpoint-dir",
        ctx.dir("checkpoints"),
        "--algorithm",
        ctx.spec.algorithm,
        "--epochs",
        str(t.epochs),
        "--lr",
        _num(t.learning_rate),
        "--scheduler",
        t.scheduler,
        "--warmup-steps",
        str(t.warmup_steps),
        "--ttt-steps",
        str(t.ttt_steps),
        "--loss",
        t.loss,
        "--step-weighting",
        t.step_weighting,
    ]
    if t.train_lm_head is not None:
        args.append("--train-lm-head" if t.train_lm_head else "--no-train-lm-head")
    if t.draft_vocab_size is not None:
        args += ["--draft-vocab-size", str(t.draft_vocab_size)]
    spec = ctx.spec
    args += [
        "--num-layers",
        str(resolved_num_layers(spec)),
        "--num-speculative-tokens",
        str(resolved_k(spec)),
    ]
    if spec.algorithm == "dflash":
        d = t.dflash
        args += ["--block-size", str(d.block_size), "--max-anchors", str(d.max_anchors)]
        args += ["--dflash-loss-weighting", d.loss_weighting, "--dflash-decay-gamma", _num(d.decay_gamma)]
        args += ["--dpace-alpha", _num(d.dpace_alpha)]
        if d.mask_token_id is not None:
            args += ["--mask-token-id", str(d.mask_token_id)]
    if t.checkpoint_every_steps is not None:
        args += ["--checkpoint-every-steps", str(t.checkpoint_every_steps)]
    args += ["--seed", str(t.seed)]
    if t.fsdp:
        args.append("--fsdp")
    args += ["--summary-path", c.TERMINATION_LOG]
    return args


def _train(ctx: TrainingContext, parts: r.PodParts, verifier: str) -> list[dict[str, Any]]:
    t = ctx.spec.training
    args = _train_args(ctx, verifier)
    container = ctx.cli_container(
        "train",
        "train",
        args,
        mounts=parts.mounts,
        resource_spec=r.resources(t.resources, r.gpu_limits(t.gpus_per_node)),
    )
    if t.runtime == "trainjob":
        # Kubeflow Trainer injects torchrun's rendezvous (PET_*), which torchrun reads from the environment.
        container["command"] = ["torchrun"]
        container["args"] = ["-m", "speculators_core.cli", "train", *args]
    elif t.nodes * t.gpus_per_node > 1:
        # torchrun starts one `speculators train` per GPU; Kubernetes expands $(VAR) from the env below.
        container["command"] = ["torchrun"]
        container["args"] = [
            "--nnodes=$(NNODES)",
            "--nproc-per-node=$(NPROC_PER_NODE)",
            "--node-rank=$(NODE_RANK)",
            "--master-addr=$(MASTER_ADDR)",
            "--master-port=$(MASTER_PORT)",
            "-m",
            "speculators_core.cli",
            "train",
            *args,
        ]
        service = job_name(ctx.name, "train")
        master = f"{service}-0.{service}" if t.nodes > 1 else "127.0.0.1"
        rank: dict[str, Any] = (
            {
                "valueFrom": {
                    "fieldRef": {"fieldPath": f"metadata.annotations['{c.JOB_COMPLETION_INDEX_ANNOTATION}']"}
                }
            }
            if t.nodes > 1
            else {"value": "0"}
        )
        container["env"] += [
            {"name": "MASTER_ADDR", "value": master},
            {"name": "MASTER_PORT", "value": str(c.TORCHRUN_PORT)},
            {"name": "NNODES", "value": str(t.nodes)},
            {"name": "NPROC_PER_NODE", "value": str(t.gpus_per_node)},
            {"name": "NODE_RANK", **rank},
        ]
        container["ports"] = [{"name": "rendezvous", "containerPort": c.TORCHRUN_PORT}]
    return [container]


def _eval(ctx: TrainingContext, parts: r.PodParts, verifier: str) -> list[dict[str, Any]]:
    spec = ctx.spec
    args = [
        "--verifier",
        verifier,
        "--draft",
        ctx.dir("model"),
        "--data",
        ctx.dir("data"),
        "--num-speculative-tokens",
        str(resolved_k(spec)),
        "--max-speculative-tokens",
        str(eval_max_k(spec)),
        "--prompt-set",
        prompt_set_path(ctx),
        "--max-samples",
        str(spec.evaluation.max_samples),
        "--summary-path",
        c.TERMINATION_LOG,
    ]
    if spec.evaluation.temperature > 0:
        args += ["--temperature", _num(spec.evaluation.temperature)]
    return [
        ctx.cli_container(
            "eval",
            "eval",
            args,
            mounts=parts.mounts,
            resource_spec=r.resources(spec.evaluation.resources, r.gpu_limits(1)),
        )
    ]


def _publish(ctx: TrainingContext, parts: r.PodParts) -> list[dict[str, Any]]:
    """One container per target (s3, hub), each with only its own credentials."""
    out = ctx.spec.output
    containers = []
    targets: list[tuple[str, str, list[str], str]] = []
    if out.s3:
        targets.append(("publish-s3", out.s3.uri, [], out.s3.secret_ref.name))
    if out.hub:
        flags = ["--private"] if out.hub.private else []
        targets.append(("publish-hub", f"hf://{out.hub.repo}", flags, out.hub.secret_ref.name))
    for name, uri, flags, secret in targets:
        args = [ctx.dir("model"), "--to", uri, *flags, "--summary-path", c.TERMINATION_LOG]
        container = ctx.cli_container(
            name,
            "publish",
            args,
            mounts=parts.mounts,
            resource_spec={"requests": {"cpu": "1", "memory": "4Gi"}},
        )
        container["envFrom"] = r.env_from([secret])
        containers.append(container)
    return containers


def _num(value: float) -> str:
    """Shortest text that reads back as the same float (0.0001, 1e-05)."""
    return repr(float(value))


def step_job(ctx: TrainingContext, step: str, step_hash: str) -> dict[str, Any]:
    """The Job of one step; its hash annotation ties it to the inputs it was created for."""
    spec = ctx.spec
    name = job_name(ctx.name, step)
    parts, verifier = _pod_parts(ctx)
    if step == "prepare":
        containers = _prepare(ctx, parts, verifier)
    elif step == "datagen":
        containers = _datagen(ctx, parts, verifier)
    elif step == "train":
        containers = _train(ctx, parts, verifier)
    elif step == "eval":
        containers = _eval(ctx, parts, verifier)
    elif step == "publish":
        containers = _publish(ctx, parts)
    else:
        raise ValueError(f"unknown step {step!r}")
    # Publishing to two targets: the first runs as an init container, so both summaries survive.
    init_containers = list(parts.init_containers)
    if len(containers) > 1:
        init_containers += containers[:-1]
        containers = containers[-1:]
    labels = _labels(ctx, step, name)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": r.pod_security_context(),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containers": containers,
        "volumes": [*r.base_volumes(), *parts.volumes],
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    if spec.image.pull_secrets:
        pod_spec["imagePullSecrets"] = [s.wire() for s in spec.image.pull_secrets]
    r.apply_scheduling(pod_spec, spec.scheduling)
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.training.max_retries if step == "train" else 3,
        "ttlSecondsAfterFinished": c.JOB_TTL_SECONDS,
        "podFailurePolicy": r.job_failure_policy(),
        "template": {
            "metadata": r.pod_template_metadata(labels, spec.pod_metadata),
            "spec": pod_spec,
        },
    }
    if step == "datagen":
        shards = spec.datagen.shards
        job_spec.update(
            completionMode="Indexed", completions=shards, parallelism=shards, backoffLimitPerIndex=3
        )
        # With per-index backoff the Job-wide limit must not cut retries of other shards short.
        job_spec.pop("backoffLimit")
    elif step == "train" and spec.training.nodes > 1:
        nodes = spec.training.nodes
        job_spec.update(completionMode="Indexed", completions=nodes, parallelism=nodes)
        pod_spec["subdomain"] = name
    metadata = r.child_metadata(
        ctx.body, name, labels, {c.ANNOTATION_SPEC_HASH: step_hash, c.ANNOTATION_STEP: step}
    )
    queue = r.queue_name(spec.scheduling)
    if step == "train" and spec.training.runtime == "trainjob":
        t = spec.training
        return trainjob.train_job(
            metadata,
            job_spec["template"]["metadata"],
            pod_spec,
            runtime=t.training_runtime,
            nodes=t.nodes,
            gpus_per_node=t.gpus_per_node,
            queue=queue,
        )
    if queue:
        # Created suspended, as Kueue expects: it admits (unsuspends) the Job against the queue's quota.
        metadata["labels"][r.QUEUE_LABEL] = queue
        job_spec["suspend"] = True
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def deploy_name(ctx: TrainingContext) -> str | None:
    if ctx.spec.deploy is None:
        return None
    return ctx.spec.deploy.name or ctx.name


def deploy_speculator(ctx: TrainingContext) -> dict[str, Any] | None:
    """The Speculator of spec.deploy: this training's verifier, its output as the draft (trainingRef)."""
    deploy = ctx.spec.deploy
    if deploy is None:
        return None
    name = deploy_name(ctx)
    assert name
    spec = deploy.wire()
    spec.pop("name", None)
    spec["verifier"] = ctx.spec.verifier.wire()
    spec["draft"] = {"trainingRef": {"name": ctx.name}}
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.SPECULATOR_KIND,
        "metadata": r.child_metadata(ctx.body, name, _labels(ctx, "deploy", name)),
        "spec": spec,
    }
