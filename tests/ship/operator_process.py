"""The real `speculators-operator` entry point as a child process, started with the arguments and
environment of a rendered Deployment (kwok runs no containers: this process stands in for the pod's
container), authenticated as a ServiceAccount through a token kubeconfig."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from harness.operator_process import OperatorProcess, service_account_kubeconfig
from kubecluster.procs import free_port


class DeployedOperator(OperatorProcess):
    """Runs the container of `deployment` (its args and env) as a local process."""

    def __init__(self, deployment: dict[str, Any], kubeconfig: Path, log_dir: Path, pod_name: str) -> None:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        liveness, metrics = free_port(), free_port()
        # Only the listening addresses differ from the pod: ports must be free on this shared machine.
        args = []
        for arg in container.get("args", []):
            if arg.startswith("--liveness="):
                arg = f"--liveness=http://127.0.0.1:{liveness}/healthz"
            elif arg.startswith("--metrics-port="):
                arg = f"--metrics-port={metrics}"
            args.append(arg)
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        for e in container.get("env", []):
            if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[e["name"]] = pod_name
        full_env = {**os.environ, **env, "KUBECONFIG": str(kubeconfig)}
        full_env.pop("KUBERNETES_SERVICE_HOST", None)
        super().__init__(
            [*args, "--metrics-address", "127.0.0.1"],
            env=full_env,
            log_dir=log_dir,
            liveness_port=liveness,
            metrics_port=metrics,
        )


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
        log_dir = tmp_path / release
        log_dir.mkdir()
        operator = DeployedOperator(deployment, kubeconfig, log_dir, pods[0]["metadata"]["name"])
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
