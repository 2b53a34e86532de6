"""backend llmisvc without a cluster: the LLMInferenceService the operator renders, what KServe's own preset
makes of its args (its real bash script, run here), and the status folded back."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from localrun.kserve_standin import llmisvc_pod
from shiplib import speculator_body

from speculators_operator.api.common import ModelSource
from speculators_operator.render import llmisvc
from speculators_operator.render.common import Images
from speculators_operator.render.speculator import ResolvedDraft, SpeculatorContext
from speculators_operator.status.llmisvc import deployment_condition, url
from speculators_operator.status.speculator import SpeculatorObserved, derive_speculator

IMAGES = Images(runtime="registry.example/runtime:1", vllm="registry.example/vllm:1")
DRAFT = ResolvedDraft(ModelSource(uri="hf://RedHatAI/granite-3.3-8b-instruct-speculator.eagle3"), "eagle3", 3)
PRESET = Path(__file__).resolve().parents[1] / "fixtures" / "kserve_config-llm-template.yaml"
NOW = "2026-01-01T00:00:00Z"


def _ctx(**spec: Any) -> SpeculatorContext:
    spec.setdefault("verifier", {"uri": "hf://ibm-granite/granite-3.3-8b-instruct"})
    body = speculator_body("granite", "ns", backend="llmisvc", **spec)
    body["metadata"]["uid"] = "uid-granite"
    return SpeculatorContext.of(body, IMAGES)


def _main(obj: dict[str, Any]) -> dict[str, Any]:
    (main,) = obj["spec"]["template"]["containers"]
    return main


def test_the_llm_inference_service_names_the_verifier_and_brings_the_draft() -> None:
    ctx = _ctx(replicas=2, vllm={"tensorParallelSize": 2, "maxModelLen": 8192})
    obj = llmisvc.llm_inference_service(ctx, DRAFT)
    assert obj["apiVersion"] == "serving.kserve.io/v1alpha2" and obj["kind"] == "LLMInferenceService"
    meta = obj["metadata"]
    assert meta["name"] == "granite" and meta["ownerReferences"][0]["uid"] == "uid-granite"
    assert meta["labels"]["opendatahub.io/dashboard"] == "true"
    spec = obj["spec"]
    assert spec["model"] == {
        "uri": "hf://ibm-granite/granite-3.3-8b-instruct",
        "name": "ibm-granite/granite-3.3-8b-instruct",
    }
    assert spec["replicas"] == 2 and spec["parallelism"] == {"tensor": 2}
    assert spec["router"] == {"route": {}, "gateway": {}, "scheduler": {}}  # llm-d's, by default
    assert "storageInitializer" not in spec  # KServe's downloads the verifier to /mnt/models
    # The pods carry the operator's labels: scraping, status and automatic k find them.
    assert spec["labels"]["speculators.ai/speculator"] == "granite"
    assert spec["labels"]["app.kubernetes.io/component"] == "vllm"
    assert spec["annotations"]["speculators.ai/draft"] == DRAFT.source.uri
    main = _main(obj)
    assert main["name"] == "main" and "image" not in main  # the preset's llm-d image
    args = main["args"]
    for owned in ("--port", "--served-model-name", "--tensor-parallel-size", "--host"):
        assert owned not in args  # KServe sets them from the object or its preset
    assert args[args.index("--max-model-len") + 1] == "8192"
    assert main["resources"] == {"limits": {"nvidia.com/gpu": 2}}
    assert {"name": "speculators-models", "mountPath": "/mnt/speculators"} in main["volumeMounts"]
    (fetch,) = spec["template"]["initContainers"]
    assert fetch["name"] == "fetch-draft" and fetch["image"] == "registry.example/runtime:1"
    assert fetch["args"][:3] == [DRAFT.source.uri, "--dest", "/mnt/speculators/draft"]
    assert spec["template"]["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_kserves_own_preset_hands_the_args_to_vllm_intact(tmp_path: Path) -> None:
    """The preset passes the container's args through `eval`: shell-quoted, the JSON arrives whole."""
    ctx = _ctx(vllm={"extraArgs": ["--enable-prefix-caching", "--max-num-seqs=64"]})
    obj = llmisvc.llm_inference_service(ctx, DRAFT)
    # The pod KServe makes: its preset, its template expressions filled in, our object merged over it.
    (container,) = llmisvc_pod(PRESET.read_text(), obj)["containers"]
    command = list(container["command"])
    assert command[:2] == ["/bin/bash", "-c"] and command[-1] == "--"
    assert container["args"] == _main(obj)["args"]
    vllm = tmp_path / "vllm"  # stands in for vLLM's CLI: prints the argv it was given
    vllm.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        "print('vllm 0.33.0' if sys.argv[1:] == ['--version'] else json.dumps(sys.argv[1:]))\n"
    )
    vllm.chmod(0o755)

    def run(args: list[str]) -> list[str]:
        done = subprocess.run(
            [*command, *args],
            capture_output=True,
            text=True,
            env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
            check=True,
            timeout=30,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    argv = run(_main(obj)["args"])
    assert argv[:2] == ["serve", "/mnt/models"]
    assert argv[argv.index("--port") + 1] == "8000"
    config = json.loads(argv[argv.index("--speculative-config") + 1])
    assert config == {"model": "/mnt/speculators/draft", "method": "eagle3", "num_speculative_tokens": 3}
    assert argv[-2:] == ["--enable-prefix-caching", "--max-num-seqs=64"]
    assert argv.count("--speculative-config") == 1 and argv.count("--port") == 1
    # Unquoted, the preset's eval eats the JSON's quotes: the quoting is what makes it work.
    bare = run([shlex.split(a)[0] for a in _main(obj)["args"]])
    mangled = bare[bare.index("--speculative-config") + 1]  # quotes eaten, then brace expansion
    with pytest.raises(json.JSONDecodeError):
        json.loads(mangled)


def test_a_verifier_with_a_secret_is_fetched_by_our_init_container() -> None:
    ctx = _ctx(verifier={"uri": "s3://models/granite", "secretRef": {"name": "s3-creds"}})
    obj = llmisvc.llm_inference_service(ctx, DRAFT)
    spec = obj["spec"]
    assert spec["storageInitializer"] == {"enabled": False}
    fetch = {c["name"]: c for c in spec["template"]["initContainers"]}
    assert fetch["fetch-verifier"]["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert fetch["fetch-verifier"]["args"][:3] == ["s3://models/granite", "--dest", "/mnt/models"]
    assert {"name": "speculators-verifier", "mountPath": "/mnt/models"} in _main(obj)["volumeMounts"]
    assert json.dumps(obj).count("s3-creds") == 1  # by reference, once


def test_a_pvc_draft_is_mounted_and_zero_replicas_stops_it() -> None:
    pvc = ResolvedDraft(ModelSource(uri="pvc://workspace/granite-train/model"), "eagle3", 4)
    obj = llmisvc.llm_inference_service(_ctx(replicas=0), pvc)
    assert "initContainers" not in obj["spec"]["template"]
    args = _main(obj)["args"]
    (raw,) = shlex.split(args[args.index("--speculative-config") + 1])
    config = json.loads(raw)
    assert config["model"] == "/mnt/pvc/workspace/granite-train/model"
    assert obj["metadata"]["annotations"]["serving.kserve.io/stop"] == "true"


def _llmisvc(conditions: list[dict[str, Any]], generation: int = 1, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "granite", "generation": generation, "annotations": {}},
        "status": {"observedGeneration": 1, "conditions": conditions, **status},
    }


def test_status_folds_ready_progress_and_failures() -> None:
    ctx = _ctx()
    assert deployment_condition(ctx, None, None).reason == "Creating"
    assert deployment_condition(ctx, _llmisvc([], generation=2), None).reason == "Progressing"
    rolling = _llmisvc(
        [
            {"type": "Ready", "status": "False", "reason": "MinimumReplicasUnavailable"},
            {"type": "MainWorkloadReady", "status": "False", "reason": "MinimumReplicasUnavailable"},
        ]
    )
    cond = deployment_condition(ctx, rolling, None)
    assert (cond.status, cond.reason) == ("Unknown", "Progressing") and "MainWorkloadReady" in cond.message
    stuck = _llmisvc([{"type": "MainWorkloadReady", "status": "False", "reason": "ProgressDeadlineExceeded"}])
    assert (deployment_condition(ctx, stuck, None).status, deployment_condition(ctx, stuck, None).reason) == (
        "False",
        "ProgressDeadlineExceeded",
    )
    preset = _llmisvc(
        [{"type": "PresetsCombined", "status": "False", "reason": "ConfigNotFound", "message": "x"}]
    )
    assert deployment_condition(ctx, preset, None).reason == "ConfigNotFound"
    ready = _llmisvc([{"type": "Ready", "status": "True"}], url="https://granite.apps.example.com")
    assert deployment_condition(ctx, ready, None).reason == "Available"
    assert url(ready) == "https://granite.apps.example.com"
    assert url(_llmisvc([], addresses=[{"url": "https://granite-kserve-workload-svc.ns.svc:8000"}])) == (
        "https://granite-kserve-workload-svc.ns.svc:8000"
    )


def test_derive_renders_it_and_reports_kserve_missing_without_it() -> None:
    body = _ctx().body
    plan = derive_speculator(body, SpeculatorObserved(llmisvc_served=False), IMAGES, NOW)
    assert plan.status["phase"] == "Failed" and not plan.apply
    ready = next(c for c in plan.status["conditions"] if c["type"] == "DeploymentReady")
    assert ready["reason"] == "KServeNotInstalled" and "LLMInferenceService" in ready["message"]
    leftover = {"kind": "Deployment", "metadata": {"name": "granite-vllm", "namespace": "ns", "uid": "d"}}
    plan = derive_speculator(body, SpeculatorObserved(llmisvc_served=True, deployment=leftover), IMAGES, NOW)
    assert [o["kind"] for o in plan.apply] == ["LLMInferenceService"] and plan.delete == [leftover]


def _running(pod_spec: dict[str, Any], ip: str = "127.0.0.1") -> dict[str, Any]:
    return {
        "metadata": {"name": "granite-kserve-0", "uid": "u"},
        "spec": pod_spec,
        "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_the_scraper_reads_k_from_the_quoted_args_and_speaks_tls_when_kserve_does(tmp_path: Path) -> None:
    """With KServe's TLS on, the preset's probes are HTTPS and vLLM serves /metrics over TLS with a
    self-signed certificate: scraped over https without verification (a pod IP names no certificate)."""
    import asyncio
    import http.server
    import ssl
    import threading

    from speculators_operator.metrics import scraper

    obj = llmisvc.llm_inference_service(_ctx(), DRAFT)
    plain = _running(llmisvc_pod(PRESET.read_text(), obj))
    (target,) = scraper.targets([plain], 8000)
    assert target.url == "http://127.0.0.1:8000/metrics" and target.plan == 3

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    openssl = [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=granite",
    ]
    subprocess.run(
        [*openssl, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    metrics = (Path(__file__).resolve().parents[1] / "fixtures" / "vllm_spec_decode_metrics.txt").read_bytes()

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(metrics)))
            self.end_headers()
            self.wfile.write(metrics)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        tls = _running(llmisvc_pod(PRESET.read_text(), obj, tls=True))
        (target,) = scraper.targets([tls], server.server_address[1])
        assert target.url.startswith("https://127.0.0.1:")
        (result,) = asyncio.run(scraper.scrape([target]))
        assert result.error is None and result.counters is not None and result.counters.drafts == 1000
    finally:
        server.shutdown()
        server.server_close()
