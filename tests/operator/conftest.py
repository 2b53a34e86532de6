"""Fixtures of the operator's cluster tests: our CRDs, the real `speculators-operator` process, helpers.

The operator runs as a subprocess (python -m speculators_operator) against the test cluster, watching
only the test's namespace, so a test can SIGKILL it and start it again like a pod restart would.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from spd_testlib import API, REPO

from harness.operator_process import OperatorProcess as HarnessOperatorProcess
from kubecluster.procs import free_port

CRD_FILES = (
    REPO / "crds" / "speculators.ai_speculatortrainings.yaml",
    REPO / "crds" / "speculators.ai_speculators.yaml",
    REPO / "crds" / "speculators.ai_speculatorbenchmarks.yaml",
)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


class OperatorProcess(HarnessOperatorProcess):
    """`speculators-operator -n <namespace>` as a child process (the same entry point as the image)."""

    def __init__(
        self, kubeconfig: Path, namespace: str, log_dir: Path, extra: list[str] | None = None
    ) -> None:
        liveness, metrics = free_port(), free_port()
        args = [
            "--namespace", namespace,
            "--liveness", f"http://127.0.0.1:{liveness}/healthz",
            "--metrics-port", str(metrics), "--metrics-address", "127.0.0.1",
            "--resync-seconds", "10",
            "--log-level", "DEBUG",
            *(extra or []),
        ]  # fmt: skip
        super().__init__(
            args,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            log_dir=log_dir,
            liveness_port=liveness,
            metrics_port=metrics,
        )


@pytest.fixture(scope="session")
def operator_crds(install_crds: Callable[..., list[str]]) -> list[str]:
    return install_crds(*CRD_FILES)


@pytest.fixture
def operator(
    request: pytest.FixtureRequest, cluster: Any, namespace: str, operator_crds: list[str], tmp_path: Path
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(cluster.kubeconfig, namespace, tmp_path)
    proc.start()
    yield proc
    proc.stop()
    failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))
    if failed:
        print(f"\n--- operator log ({proc.log_path}) ---\n{proc.tail(200)}")


class Kube:
    """Test-side reads and writes in one namespace (plain dicts)."""

    def __init__(self, api: Any, namespace: str, wait_for: Callable[..., Any]) -> None:
        self.api = api
        self.ns = namespace
        self._wait_for = wait_for

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self.api.create(obj, self.ns)

    def get(self, kind: str, name: str, api_version: str | None = None) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api.get(api_version or _api_version(kind), kind, name, self.ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        return self.api.list(_api_version(kind), kind, self.ns, selector)

    def patch(self, kind: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.api.patch(_api_version(kind), kind, name, patch, self.ns)

    def delete(self, kind: str, name: str) -> None:
        self.api.delete(_api_version(kind), kind, name, self.ns)

    def wait(self, fetch: Callable[[], Any], until: Callable[[Any], bool] | None = None, **kw: Any) -> Any:
        kw.setdefault("timeout", 60)
        return self._wait_for(fetch, until, **kw)

    def wait_status(
        self, kind: str, name: str, until: Callable[[dict[str, Any]], bool], what: str, **kw: Any
    ):
        return self.wait(
            lambda: (self.get(kind, name) or {}).get("status") or {},
            until,
            what=f"{kind} {name}: {what}",
            **kw,
        )

    def wait_phase(self, kind: str, name: str, phase: str, **kw: Any) -> dict[str, Any]:
        return self.wait_status(kind, name, lambda s: s.get("phase") == phase, f"phase {phase}", **kw)

    def pods(self, selector: str) -> list[dict[str, Any]]:
        return self.list("Pod", selector)

    def release_pods(
        self,
        selector: str,
        *,
        outcome: str = "succeed",
        message: str | None = None,
        exit_code: int | None = None,
        count: int = 1,
    ) -> list[str]:
        """Let held Job pods finish (kwok markers on the pods themselves)."""
        pods = self.wait(
            lambda: [p for p in self.pods(selector) if p["status"].get("phase") == "Running"],
            lambda ps: len(ps) >= count,
            what=f"{count} running pod(s) {selector}",
        )
        names = []
        for pod in pods[:count]:
            ann: dict[str, Any] = {"sim.speculators.ai/hold": "false", "sim.speculators.ai/outcome": outcome}
            if message is not None:
                ann["sim.speculators.ai/termination-message"] = message
            if exit_code is not None:
                ann["sim.speculators.ai/exit-code"] = str(exit_code)
            self.patch("Pod", pod["metadata"]["name"], {"metadata": {"annotations": ann}})
            names.append(pod["metadata"]["name"])
        return names

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.list("Event") if e["involvedObject"].get("name") == name]


def _api_version(kind: str) -> str:
    return {
        "SpeculatorTraining": API,
        "Speculator": API,
        "SpeculatorBenchmark": API,
        "Job": "batch/v1",
        "Deployment": "apps/v1",
        "Pod": "v1",
        "Service": "v1",
        "PersistentVolumeClaim": "v1",
        "Event": "v1",
    }[kind]


@pytest.fixture
def k(kube_api: Any, namespace: str, wait_for: Callable[..., Any]) -> Kube:
    return Kube(kube_api, namespace, wait_for)


class VllmStandIn:
    """Stand-in for a running vLLM server (kwok runs no containers): serves /metrics, /health and /v1/models
    on the pod's own IP and port, with exposition text the test sets."""

    def __init__(self, ip: str, port: int, text: str) -> None:
        self.text = text
        self.scrapes = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    stand_in.scrapes += 1
                    body = stand_in.text.encode()
                elif self.path in ("/health", "/v1/models"):
                    body = b'{"object": "list", "data": []}'
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((ip, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @contextmanager
    def running(self) -> Iterator[VllmStandIn]:
        self.thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
