"""The real `speculators-operator` entry point as a child process, started with the arguments and
environment of a rendered Deployment (kwok runs no containers: this process stands in for the pod's
container), authenticated as a ServiceAccount through a token kubeconfig."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_account_kubeconfig(
    kube_api: Any, admin_kubeconfig: Path, namespace: str, name: str, path: Path
) -> Path:
    """A kubeconfig that authenticates as system:serviceaccount:<namespace>:<name> (a TokenRequest)."""
    token = kube_api.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )["status"]["token"]
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": name, "user": {"token": token}}],
                "contexts": [{"name": name, "context": {"cluster": cluster["name"], "user": name}}],
                "current-context": name,
            }
        )
    )
    return path


class DeployedOperator:
    """Runs the container of `deployment` (its args and env) as a local process."""

    def __init__(self, deployment: dict[str, Any], kubeconfig: Path, log_path: Path, pod_name: str) -> None:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        self.liveness = free_port()
        self.metrics = free_port()
        # Only the listening addresses differ from the pod: ports must be free on this shared machine.
        args = []
        for arg in container.get("args", []):
            if arg.startswith("--liveness="):
                arg = f"--liveness=http://127.0.0.1:{self.liveness}/healthz"
            elif arg.startswith("--metrics-port="):
                arg = f"--metrics-port={self.metrics}"
            args.append(arg)
        self.argv = [sys.executable, "-m", "speculators_operator", *args, "--metrics-address", "127.0.0.1"]
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        for e in container.get("env", []):
            if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[e["name"]] = pod_name
        self.env = {**os.environ, **env, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
        self.env.pop("KUBERNETES_SERVICE_HOST", None)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.liveness}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)  # polling the liveness endpoint, not synchronising on time
        raise RuntimeError(f"operator not alive after {timeout}s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def tail(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def operator_from_chart(
    cluster: Any,
    kube_api: Any,
    namespace: str,
    tmp_path: Path,
    wait_for: Any,
    values: dict[str, Any] | None = None,
) -> Iterator[DeployedOperator]:
    """`helm install` the chart into `namespace` (watching only it), wait for its pod (admitted under Pod
    Security "restricted"), then run the operator as that pod would: its args, env and ServiceAccount.
    On exit: the operator stops, the release is uninstalled (checked: its cluster-scoped objects go too),
    and the operator's log must hold no Forbidden."""
    from release import helm
    from release.paths import CHART

    release = f"spd-{secrets.token_hex(3)}"
    all_values = {"watchNamespaces": [namespace], **(values or {})}
    values_file = tmp_path / f"{release}-values.yaml"
    values_file.write_text(yaml.safe_dump(all_values))
    helm.run(
        "install", release, str(CHART), "--namespace", namespace, "--values", str(values_file),
        kubeconfig=cluster.kubeconfig,
    )  # fmt: skip
    operator: DeployedOperator | None = None
    try:
        rendered = helm.template(CHART, release=release, namespace=namespace, values=all_values)
        deployment = next(o for o in rendered if o["kind"] == "Deployment")
        sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
        pods = wait_for(
            lambda: [
                p
                for p in kube_api.list("v1", "Pod", namespace, selector)
                if p["status"].get("phase") == "Running"
            ],
            bool,
            timeout=60,
            what=f"the chart's operator pod ({selector})",
        )
        kubeconfig = service_account_kubeconfig(
            kube_api, cluster.kubeconfig, namespace, sa, tmp_path / f"{release}.kubeconfig"
        )
        operator = DeployedOperator(
            deployment, kubeconfig, tmp_path / f"{release}.log", pods[0]["metadata"]["name"]
        )
        operator.start()
        yield operator
    finally:
        if operator is not None:
            operator.stop()
        helm.run("uninstall", release, "--namespace", namespace, "--wait", kubeconfig=cluster.kubeconfig)
    roles = {r["metadata"]["name"] for r in kube_api.list("rbac.authorization.k8s.io/v1", "ClusterRole")}
    assert not any(n.startswith(release) for n in roles), "helm uninstall left cluster-scoped objects"
    log = operator.log_path.read_text() if operator else ""
    assert "Forbidden" not in log and " 403" not in log, operator.tail(80) if operator else ""
