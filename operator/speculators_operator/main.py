"""`speculators-operator`: Kopf handlers, the scrape and resync loops, liveness and Prometheus metrics."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
from collections.abc import Sequence

import kopf
from prometheus_client import start_http_server

from speculators_operator.cache import ChildCache, Reads
from speculators_operator.handlers import kopf_handlers
from speculators_operator.handlers.kopf_handlers import OperatorContext
from speculators_operator.handlers.loops import MetricsLoop, cache_loop, resync_loop
from speculators_operator.handlers.peering import PeeringGate, own_identity
from speculators_operator.handlers.reconcile import Reconciler
from speculators_operator.handlers.registry import Registry
from speculators_operator.handlers.runner import KeyedRunner
from speculators_operator.kube import Kube
from speculators_operator.metrics.store import MetricsStore
from speculators_operator.render.common import Images

log = logging.getLogger("speculators_operator")


def _env_list(name: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s crashed", task.get_name(), exc_info=task.exception())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="speculators-operator",
        description="Reconcile SpeculatorTraining and Speculator resources (speculators.ai/v1alpha1).",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=None,
        help="watch only this namespace (repeatable; env SPECULATORS_NAMESPACES=a,b); default: all",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch all namespaces (the default)"
    )
    p.add_argument(
        "--peering",
        default=os.environ.get("SPECULATORS_PEERING") or None,
        help="Kopf peering name, for more than one replica (needs the kopf.dev CRDs); default: standalone",
    )
    p.add_argument(
        "--priority",
        type=_priority,
        default=os.environ.get("SPECULATORS_PRIORITY", "0"),  # argparse passes a str default through type
        help="peering priority of this replica, or 'random' (replicas of one Deployment: Kopf pauses every "
        "replica when peers share the highest priority) (default 0)",
    )
    p.add_argument(
        "--peering-lifetime",
        type=int,
        default=int(os.environ.get("SPECULATORS_PEERING_LIFETIME", "60")),
        help="seconds a peer counts as alive after its last keep-alive: a standby takes over this long "
        "after the active replica died (default %(default)s)",
    )
    p.add_argument(
        "--liveness",
        default=os.environ.get("SPECULATORS_LIVENESS", "http://0.0.0.0:8081/healthz"),
        help="liveness endpoint URL, or 'off' (default %(default)s)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("SPECULATORS_METRICS_PORT", "8080")),
        help="port of the operator's Prometheus /metrics; 0 disables (default %(default)s)",
    )
    p.add_argument("--metrics-address", default="0.0.0.0", help="bind address of the metrics server")
    p.add_argument(
        "--resync-seconds",
        type=float,
        default=float(os.environ.get("SPECULATORS_RESYNC_SECONDS", "300")),
        help="reconcile every object at this interval, whatever the events (default %(default)s)",
    )
    p.add_argument("--runtime-image", default=os.environ.get("SPECULATORS_RUNTIME_IMAGE"), help="Jobs' image")
    p.add_argument(
        "--vllm-image", default=os.environ.get("SPECULATORS_VLLM_IMAGE"), help="default vLLM image"
    )
    p.add_argument("--log-level", default=os.environ.get("SPECULATORS_LOG_LEVEL", "INFO"))
    return p


def _priority(value: str) -> int:
    """An integer, or 'random': distinct priorities among identical pods, so exactly one is active."""
    if value == "random":
        return 1 + secrets.randbelow(2**31 - 2)
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--priority must be an integer or 'random', not {value!r}"
        ) from None


async def run(args: argparse.Namespace, stop: asyncio.Event | None = None) -> None:
    stop = stop if stop is not None else asyncio.Event()
    defaults = Images()
    images = Images(runtime=args.runtime_image or defaults.runtime, vllm=args.vllm_image or defaults.vllm)
    kube = Kube.from_environment()
    store = MetricsStore()
    cache = ChildCache()
    reads = Reads(kube, cache)
    reconciler = Reconciler(kube, store, images, reads)
    runner = KeyedRunner(reconciler)
    registry = Registry()
    ctx = OperatorContext(
        reconciler=reconciler, runner=runner, registry=registry, store=store, cache=cache, stop=stop
    )
    namespaces = args.namespace or _env_list("SPECULATORS_NAMESPACES")

    settings = kopf.OperatorSettings()
    kopf_handlers.configure_settings(settings)
    settings.peering.lifetime = args.peering_lifetime
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    identity = own_identity()
    gate = PeeringGate(
        kube, name=args.peering, identity=identity, priority=args.priority, namespaces=namespaces
    )
    metrics_loop = MetricsLoop(registry, store, kube, runner, gate, reads=reads)
    loops = [
        asyncio.create_task(
            cache_loop(cache, kube, namespaces or None, args.resync_seconds, stop, gate), name="cache loop"
        ),
        asyncio.create_task(metrics_loop.run(stop), name="metrics loop"),
        asyncio.create_task(
            resync_loop(registry, runner, args.resync_seconds, stop, gate), name="resync loop"
        ),
    ]
    log.info(
        "watching %s; %s",
        ", ".join(namespaces) if namespaces else "all namespaces",
        f"peering {args.peering} (priority {args.priority})" if args.peering else "standalone",
    )
    try:
        await kopf.operator(
            settings=settings,
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=not args.peering,
            peering_name=args.peering,
            priority=args.priority,
            identity=identity,  # type: ignore[arg-type]  # Kopf's Identity is a NewType of str
            liveness_endpoint=None if args.liveness == "off" else args.liveness,
            stop_flag=stop,
            memo=kopf.Memo(ctx=ctx),
        )
    finally:
        stop.set()
        await asyncio.gather(*loops, return_exceptions=True)
        await runner.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_address)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
