"""Children of a SpeculatorBenchmark: the results PVC, the temporary baseline (Deployment + Service) and
the benchmark Job.

The baseline is the Speculator's own vLLM Deployment as the Speculator renders it, without the draft: the
same verifier, image, vLLM arguments, resources and scheduling, minus `--speculative-config` (and minus
what only a Speculator's serving pods do: the draft download, traffic capture, the shared model cache).

The Job runs one pod: init container `bench-speculator` (GuideLLM against the Speculator's Service), then
`bench-baseline` (against the baseline), one after the other so the two never share the nodes' network or
the client's CPU; then `report` writes report.html and summary.json next to GuideLLM's JSON and puts the
compact summary in its termination message, which the status reads. A retried pod skips the servers it
has already measured (the reports are on the PVC).
"""

from __future__ import annotations

import copy
from typing import Any

from speculators_core.sources import parse_source
from speculators_operator import constants as c
from speculators_operator.api.benchmark import SpeculatorBenchmarkSpec, SyntheticData
from speculators_operator.api.speculator import SpeculatorSpec
from speculators_operator.render import common as r
from speculators_operator.render import speculator as rs

RESULTS_MOUNT = "/results"
DATA_MOUNT = "/data"
SPECULATOR = "speculator"
BASELINE = "baseline"


class BenchmarkContext(r.ResourceContext[SpeculatorBenchmarkSpec]):
    spec_model = SpeculatorBenchmarkSpec

    @property
    def job_name(self) -> str:
        return f"{self.name}-benchmark"

    @property
    def baseline_name(self) -> str:
        return f"{self.name}-baseline"

    @property
    def results_claim(self) -> str:
        return self.spec.results.claim_name or f"{self.name}-results"

    @property
    def results_dir(self) -> str:
        return f"{RESULTS_MOUNT}/{self.name}"

    @property
    def results_uri(self) -> str:
        return f"pvc://{self.results_claim}/{self.name}"

    @property
    def image(self) -> str:
        return self.spec.image or self.images.runtime

    def baseline_url(self, port: int) -> str:
        if not self.spec.baseline.create:
            assert self.spec.baseline.url
            return self.spec.baseline.url.rstrip("/")
        return f"http://{self.baseline_name}.{self.namespace}.svc:{port}"


def _labels(ctx: BenchmarkContext, component: str, instance: str) -> dict[str, str]:
    return r.labels(c.APP_BENCHMARK, component, instance, c.LABEL_BENCHMARK, ctx.name)


def results_pvc(ctx: BenchmarkContext) -> dict[str, Any] | None:
    results = ctx.spec.results
    if results.claim_name:
        return None
    name = ctx.results_claim
    return r.claim(
        ctx.body,
        name,
        _labels(ctx, "results", name),
        access_mode="ReadWriteOnce",
        size=str(results.size),
        storage_class=results.storage_class_name,
    )


def _without_speculation(spec: Any) -> Any:
    """The Speculator's spec as its baseline serves it: one replica, no capture, no shared cache."""
    capture = spec.traffic.capture.model_copy(update={"enabled": False})
    return spec.model_copy(
        update={
            "replicas": 1,
            "traffic": spec.traffic.model_copy(update={"capture": capture}),
            "cache": spec.cache.model_copy(update={"claim_name": None, "size": None}),
        }
    )


def _drop_speculative_config(args: list[str]) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--speculative-config":
            skip = True
            continue
        if arg.startswith("--speculative-config="):
            continue
        out.append(arg)
    return out


def baseline_deployment(
    ctx: BenchmarkContext, speculator: dict[str, Any], draft: rs.ResolvedDraft
) -> dict[str, Any]:
    """The Speculator's Deployment by its own renderer, without the draft; owned by the benchmark."""
    served = SpeculatorSpec.model_validate(speculator.get("spec") or {})
    spec_ctx = rs.SpeculatorContext(body=speculator, spec=_without_speculation(served), images=ctx.images)
    dep = copy.deepcopy(rs.deployment(spec_ctx, draft))
    name = ctx.baseline_name
    labels = _labels(ctx, BASELINE, name)
    queue = r.queue_name(spec_ctx.spec.scheduling)
    if queue:
        labels[r.QUEUE_LABEL] = queue
    pod = dep["spec"]["template"]["spec"]
    pod["initContainers"] = [i for i in pod.get("initContainers") or [] if i["name"] != "fetch-draft"]
    if not pod["initContainers"]:
        del pod["initContainers"]
    vllm = next(cont for cont in pod["containers"] if cont["name"] == "vllm")
    vllm["args"] = _drop_speculative_config(vllm["args"])
    draft_src, verifier_src = parse_source(draft.source.uri), parse_source(spec_ctx.spec.verifier.uri)
    if draft_src.scheme == "pvc" and draft_src.claim and draft_src.claim != verifier_src.claim:
        # The draft's own claim (maybe ReadWriteOnce, on another node): not mounted by the baseline.
        volume = r.pvc_volume_name(draft_src.claim)
        pod["volumes"] = [v for v in pod["volumes"] if v["name"] != volume]
        for cont in [*pod["containers"], *pod.get("initContainers", [])]:
            cont["volumeMounts"] = [m for m in cont["volumeMounts"] if m["name"] != volume]
    annotations = dict(dep["spec"]["template"]["metadata"].get("annotations") or {})
    dep["metadata"] = r.child_metadata(ctx.body, name, labels)
    dep["spec"]["selector"] = {"matchLabels": {c.LABEL_INSTANCE: name, c.LABEL_BENCHMARK: ctx.name}}
    # Speculator's pod metadata (mesh, cost tags) first, then the benchmark's.
    template = r.pod_template_metadata(labels, spec_ctx.spec.pod_metadata, annotations)
    extra = ctx.spec.pod_metadata
    if extra is not None:
        template["labels"] = {**(extra.labels or {}), **template["labels"]}
        if extra.annotations:
            template["annotations"] = {**template.get("annotations", {}), **extra.annotations}
    dep["spec"]["template"]["metadata"] = template
    return dep


def baseline_service(ctx: BenchmarkContext, port: int) -> dict[str, Any]:
    name = ctx.baseline_name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": r.child_metadata(ctx.body, name, _labels(ctx, "baseline-service", name)),
        "spec": {
            "type": "ClusterIP",
            "selector": {c.LABEL_INSTANCE: name, c.LABEL_BENCHMARK: ctx.name},
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _bench_args(
    ctx: BenchmarkContext, target: str, model: str, role: str, tokenizer: str, data: dict[str, str]
) -> list[str]:
    spec = ctx.spec
    args = ["--target", target, "--model", model, "--out", f"{ctx.results_dir}/{role}.json"]
    args += ["--profile", spec.rate.type, "--max-seconds", str(spec.max_seconds)]
    if spec.rate.rates:
        args += ["--rate", *(f"{rate:g}" for rate in spec.rate.rates)]
    if spec.rate.type == "sweep":
        args += ["--sweep-size", str(spec.rate.sweep_size)]
    if spec.max_requests is not None:
        args += ["--max-requests", str(spec.max_requests)]
    if spec.warmup_seconds:
        args += ["--warmup-seconds", str(spec.warmup_seconds)]
    args += ["--tokenizer", tokenizer]
    for flag, value in data.items():
        args += [flag, value]
    return args


def _tokenizer(ctx: BenchmarkContext, served: SpeculatorSpec, model: str, parts: r.PodParts) -> str:
    """spec.tokenizer, else the verifier's: its hub id, or its directory on a PVC mounted read-only; else
    the served model name (GuideLLM loads it from the Hub)."""
    if ctx.spec.tokenizer:
        return ctx.spec.tokenizer
    verifier = parse_source(served.verifier.uri)
    if verifier.scheme == "hf" and verifier.repo_id:
        return verifier.repo_id
    if verifier.scheme == "pvc" and verifier.claim:
        root = parts.mount_claim(verifier.claim)
        return f"{root}/{verifier.path}" if verifier.path else root
    return model


def benchmark_job(
    ctx: BenchmarkContext, served: SpeculatorSpec, *, speculator_url: str, baseline_url: str, model: str
) -> dict[str, Any]:
    """The benchmark Job: both servers, then the report (see the module docstring). `served` is the
    Speculator's spec (its verifier gives the tokenizer and the Hub token)."""
    spec = ctx.spec
    parts = r.PodParts()
    results = {"name": "results", "mountPath": RESULTS_MOUNT}
    parts.add_volume({"name": "results", "persistentVolumeClaim": {"claimName": ctx.results_claim}}, results)
    data: dict[str, str] = {}
    dataset = spec.dataset
    if dataset.uri is not None:
        source = parse_source(dataset.uri)
        if source.scheme == "pvc":
            assert source.claim
            root = parts.mount_claim(source.claim)
            data["--data-path"] = f"{root}/{source.path}" if source.path else root
        else:
            data["--data-hub-id"] = source.repo_id or dataset.uri.removeprefix("hf://")
    elif dataset.builtin is not None:
        data = {"--data-builtin": dataset.builtin, "--output-tokens": str(dataset.output_tokens or 256)}
    else:
        synthetic = dataset.synthetic or SyntheticData()
        data = {
            "--prompt-tokens": str(synthetic.prompt_tokens),
            "--output-tokens": str(synthetic.output_tokens),
        }
    tokenizer = _tokenizer(ctx, served, model, parts)
    secrets = [ref.name for ref in (served.verifier.secret_ref, dataset.secret_ref) if ref is not None]
    resources = r.resources(spec.resources)

    def container(name: str, command: str, args: list[str]) -> dict[str, Any]:
        out = r.cli_container(
            name, ctx.image, "IfNotPresent", command, args, mounts=parts.mounts, resource_spec=resources
        )
        if secrets:
            out["envFrom"] = r.env_from(secrets)  # HF_TOKEN for a gated tokenizer or dataset
        return out

    spec_args = _bench_args(ctx, speculator_url, model, SPECULATOR, tokenizer, data)
    if served.replicas == 1:
        # vLLM's counters before and after the run give the acceptance over exactly this load. Behind a
        # Service with several pods each scrape lands on any one of them, so then status takes the
        # Speculator's own live window (summed over its pods) instead.
        spec_args += ["--metrics-url", f"{speculator_url}/metrics"]
        spec_args += ["--acceptance-out", f"{ctx.results_dir}/acceptance.json"]
    base_args = _bench_args(ctx, baseline_url, model, BASELINE, tokenizer, data)
    title = f"{spec.speculator_ref.name}: baseline vs speculator ({spec.rate.type})"
    report = container(
        "report", "report", [ctx.results_dir, "--title", title, "--summary-path", c.TERMINATION_LOG]
    )
    labels = _labels(ctx, "benchmark", ctx.job_name)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": r.child_metadata(
            ctx.body,
            ctx.job_name,
            labels,
            {c.ANNOTATION_SPEC_HASH: r.spec_hash(spec.wire()), c.ANNOTATION_STEP: "benchmark"},
        ),
        "spec": {
            "backoffLimit": 2,
            "ttlSecondsAfterFinished": c.JOB_TTL_SECONDS,
            "activeDeadlineSeconds": spec.timeout_seconds,
            "podFailurePolicy": r.job_failure_policy(),
            "template": {
                "metadata": r.pod_template_metadata(labels, spec.pod_metadata),
                "spec": {
                    "securityContext": r.pod_security_context(),
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "restartPolicy": "Never",
                    "initContainers": [
                        container("bench-speculator", "benchmark", spec_args),
                        container("bench-baseline", "benchmark", base_args),
                    ],
                    "containers": [report],
                    "volumes": [*r.base_volumes(), *parts.volumes],
                },
            },
        },
    }
