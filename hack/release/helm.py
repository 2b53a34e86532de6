"""The `helm` binary (built with the control plane) and `helm template` as parsed objects."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml


class HelmNotFound(RuntimeError):
    pass


def helm_binary() -> str:
    """$HELM, else the control plane's bin directory (make control-plane), else helm on PATH."""
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    try:
        from kubecluster.binaries import default_bin_dir

        candidates = (
            [Path(os.environ["SPECULATORS_K8S_BIN"])] if os.environ.get("SPECULATORS_K8S_BIN") else []
        )
        candidates.append(default_bin_dir())
        for directory in candidates:
            if os.access(directory / "helm", os.X_OK):
                return str(directory / "helm")
    except ImportError:
        pass
    found = shutil.which("helm")
    if not found:
        raise HelmNotFound("helm not found: run `make control-plane` (it builds helm) or set $HELM")
    return found


def run(*args: str, check: bool = True, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    # Helm's caches and config must not land in (or depend on) the user's home.
    env.setdefault("HELM_CACHE_HOME", str(Path(tempfile.gettempdir()) / "speculators-helm" / "cache"))
    env.setdefault("HELM_CONFIG_HOME", str(Path(tempfile.gettempdir()) / "speculators-helm" / "config"))
    env.setdefault("HELM_DATA_HOME", str(Path(tempfile.gettempdir()) / "speculators-helm" / "data"))
    proc = subprocess.run([helm_binary(), *args], capture_output=True, text=True, env=env, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc


def template(
    chart: Path,
    *,
    release: str = "speculators-operator",
    namespace: str = "speculators-operator-system",
    values: dict[str, Any] | None = None,
    kube_version: str = "1.35.0",
) -> list[dict[str, Any]]:
    """`helm template` as a list of objects (values passed as a file, so types survive)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(values or {}, f)
        f.flush()
        # helm template assumes Kubernetes 1.20 unless told: the charts require a newer one.
        out = run(
            "template", release, str(chart), "--namespace", namespace, "--values", f.name,
            "--kube-version", kube_version,
        ).stdout  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out) if doc]
