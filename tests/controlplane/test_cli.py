"""`python -m kubecluster up|status|env|down`: the lifecycle `make demo` relies on, in a second cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import KubeApi
from kubecluster import BinariesNotFound, find_binaries
from kubecluster.procs import load

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
HACK = Path(__file__).resolve().parents[2] / "hack"


def kubecluster(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(HACK)}
    return subprocess.run(
        [sys.executable, "-m", "kubecluster", *args], env=env, capture_output=True, text=True, timeout=180
    )


def test_up_status_env_down(tmp_path: Path) -> None:
    try:
        find_binaries()
    except BinariesNotFound as exc:
        if os.environ.get("SPECULATORS_TEST_KUBECONFIG"):
            pytest.skip(f"the CLI starts its own control plane; {exc}")
        raise
    state = tmp_path / "cluster"

    up = kubecluster("up", "--state-dir", str(state), "--nodes", "2", "--gpus", "4")
    assert up.returncode == 0, up.stderr
    pids = load(state / "pids")
    try:
        assert up.stdout.strip() == f"export KUBECONFIG={state / 'kubeconfig'}"
        assert "2 kwok nodes x 4 nvidia.com/gpu" in up.stderr

        status = kubecluster("status", "--state-dir", str(state))
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("running") == 5

        again = kubecluster("up", "--state-dir", str(state))
        assert again.returncode == 1 and "already running" in again.stderr

        env = kubecluster("env", "--state-dir", str(state))
        assert env.stdout == up.stdout
        api = KubeApi.from_kubeconfig(state / "kubeconfig")
        try:
            nodes = api.list("v1", "Node")
        finally:
            api.close()
        assert sorted(n["metadata"]["name"] for n in nodes) == ["kwok-gpu-0", "kwok-gpu-1"]
        assert {n["status"]["allocatable"]["nvidia.com/gpu"] for n in nodes} == {"4"}
        assert len(pids) == 5 and all(p.alive() for p in pids)
    finally:
        down = kubecluster("down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
    assert "SIGKILL" not in down.stderr, "every component stops on SIGTERM"
    assert not any(p.alive() for p in pids)
    assert kubecluster("status", "--state-dir", str(state)).returncode == 3
