"""`python -m kubecluster up|down|env|status --state-dir DIR` (PYTHONPATH=hack)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from . import procs
from .binaries import BinariesNotFound, build_binaries, find_binaries
from .cluster import ClusterConfig, ClusterState, EmbeddedCluster, StartupError, random_loopback_cidr

DEFAULT_STATE_DIR = Path(".work/cluster")


def _up(args: argparse.Namespace) -> int:
    try:
        binaries = find_binaries()
    except BinariesNotFound as exc:
        print(
            f"kubecluster: {exc}\nkubecluster: building them now (hack/build-control-plane.sh)",
            file=sys.stderr,
        )
        binaries = build_binaries()
    config = ClusterConfig(
        nodes=args.nodes, gpus_per_node=args.gpus, pod_cidr=args.pod_cidr or random_loopback_cidr()
    )
    cluster = EmbeddedCluster(args.state_dir, config, binaries, detach=True)
    cluster.start()
    print(
        f"kubecluster: up in {cluster.startup_seconds:.1f}s: {cluster.state.server}, "  # type: ignore[union-attr]
        f"{config.nodes} kwok nodes x {config.gpus_per_node} nvidia.com/gpu, pod CIDR {config.pod_cidr}",
        file=sys.stderr,
    )
    print(f"export KUBECONFIG={shlex.quote(str(cluster.kubeconfig))}")
    return 0


def _down(args: argparse.Namespace) -> int:
    cluster = EmbeddedCluster(args.state_dir)
    if not any(p.alive() for p in procs.load(cluster.pid_dir)):
        print(f"kubecluster: nothing running from {cluster.state_dir}", file=sys.stderr)
    killed = cluster.stop()
    if killed:
        print(f"kubecluster: had to SIGKILL {', '.join(killed)}", file=sys.stderr)
    return 0


def _env(args: argparse.Namespace) -> int:
    kubeconfig = Path(args.state_dir).resolve() / "kubeconfig"
    if not kubeconfig.exists():
        print(f"kubecluster: no cluster in {args.state_dir}; start one with `up`", file=sys.stderr)
        return 1
    print(f"export KUBECONFIG={shlex.quote(str(kubeconfig))}")
    return 0


def _status(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    found = procs.load(state_dir / "pids")
    if not found:
        print(f"kubecluster: no cluster in {state_dir}")
        return 3
    state = ClusterState.load(state_dir)
    print(f"server {state.server}  kubernetes {state.version}  pod CIDR {state.pod_cidr}")
    down = [p for p in found if not p.alive()]
    for p in found:
        print(f"  {p.name:<24} pid {p.pid:<8} {'running' if p.alive() else 'EXITED'}  log {p.log}")
    for p in down:
        print(f"\nlast lines of {p.log}:\n{p.tail(15)}")
    return 1 if down else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubecluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (
        ("up", _up, "start the control plane in the background; returns once it is ready"),
        ("down", _down, "stop it (SIGTERM, then SIGKILL after 10s)"),
        ("env", _env, "print `export KUBECONFIG=…`"),
        ("status", _status, "show the components and whether they run (exit 0: all running)"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument(
            "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help=f"default {DEFAULT_STATE_DIR}"
        )
        p.set_defaults(fn=fn)
        if name == "up":
            p.add_argument("--nodes", type=int, default=4, help="kwok GPU nodes (default 4)")
            p.add_argument("--gpus", type=int, default=8, help="nvidia.com/gpu per node (default 8)")
            p.add_argument("--pod-cidr", help="pod IP range (default: a random /20 in 127.0.0.0/8)")
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except (BinariesNotFound, StartupError) as exc:
        print(f"kubecluster: {exc}", file=sys.stderr)
        return 1
