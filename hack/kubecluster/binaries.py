"""Locates the control-plane binaries that hack/build-control-plane.sh builds into a versioned cache."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-control-plane.sh"
REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl")


class BinariesNotFound(RuntimeError):
    """The control-plane binaries are not built (or $SPECULATORS_K8S_BIN points at the wrong place)."""


@dataclass(frozen=True)
class Binaries:
    bin_dir: Path

    def path(self, name: str) -> str:
        return str(self.bin_dir / name)


def _script_default(var: str) -> str:
    # The build script is the one place the versions live; read its `VAR=${VAR:-default}` line.
    text = BUILD_SCRIPT.read_text()
    m = re.search(rf"^{var}=\$\{{{var}:-([^}}]+)\}}", text, re.MULTILINE)
    if not m:
        raise RuntimeError(f"cannot find the default of {var} in {BUILD_SCRIPT}")
    return m.group(1)


def kubernetes_version() -> str:
    return os.environ.get("K8S_VERSION") or _script_default("K8S_VERSION")


def default_bin_dir() -> Path:
    cache = Path(os.environ.get("SPECULATORS_CACHE", Path.home() / ".cache" / "speculators-operator"))
    return cache / f"k8s-{kubernetes_version()}" / "bin"


def _missing(bin_dir: Path) -> list[str]:
    return [b for b in REQUIRED if not os.access(bin_dir / b, os.X_OK)]


def find_binaries() -> Binaries:
    """$SPECULATORS_K8S_BIN, else the cache directory; raises BinariesNotFound naming the fix."""
    explicit = os.environ.get("SPECULATORS_K8S_BIN")
    bin_dir = Path(explicit) if explicit else default_bin_dir()
    missing = _missing(bin_dir)
    if missing:
        where = "$SPECULATORS_K8S_BIN" if explicit else "the cache"
        raise BinariesNotFound(
            f"control-plane binaries missing in {bin_dir} ({where}): {', '.join(missing)}. "
            "Build them with `make control-plane` (hack/build-control-plane.sh; needs Go >= 1.25 and "
            "the Go module proxy), or point SPECULATORS_TEST_KUBECONFIG at an existing cluster."
        )
    return Binaries(bin_dir)


def build_binaries() -> Binaries:
    """Runs the build script (idempotent; a no-op when everything is cached) and returns the result."""
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise BinariesNotFound(
            f"{BUILD_SCRIPT} failed with exit code {proc.returncode} (see its stderr above)"
        )
    lines = proc.stdout.strip().splitlines()
    os.environ.setdefault("SPECULATORS_K8S_BIN", lines[-1] if lines else str(default_bin_dir()))
    return find_binaries()
