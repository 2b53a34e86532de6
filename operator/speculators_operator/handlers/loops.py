"""Periodic work without finalizers: acceptance scrapes per Speculator, a slow resync of everything, and
the relists that keep the child cache true."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from speculators_operator import constants as c
from speculators_operator import opmetrics
from speculators_operator.api.serving import MetricsSpec
from speculators_operator.cache import ChildCache, Reads
from speculators_operator.handlers.peering import PeeringGate
from speculators_operator.handlers.registry import Registry
from speculators_operator.handlers.runner import KeyedRunner
from speculators_operator.kube import Kube
from speculators_operator.metrics import prometheus, scraper
from speculators_operator.metrics.store import MetricsStore, canary_key
from speculators_operator.render.speculator import SpeculatorContext
from speculators_operator.status.retrain import ACTIVE as CANARY_ACTIVE
from speculators_operator.status.speculator import scrape_changes_status

log = logging.getLogger(__name__)


async def sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True when `stop` was set meanwhile.

    asyncio.timeout rather than wait_for: wait_for spawns a task per call, which Kopf's shutdown would
    count as a hung task and wait 5 s for.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
    return stop.is_set()


class MetricsLoop:
    """Every tick, scrape the Speculators whose interval has passed (each at most once at a time)."""

    def __init__(
        self,
        registry: Registry,
        store: MetricsStore,
        kube: Kube,
        runner: KeyedRunner,
        gate: PeeringGate | None = None,
        tick: float = 1.0,
        reads: Reads | None = None,
    ) -> None:
        self.gate = gate
        self.reads = reads or Reads(kube)
        self.registry = registry
        self.store = store
        self.kube = kube
        self.runner = runner
        self.tick = tick
        self._due: dict[tuple[str, str], float] = {}
        self._busy: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._tick()
            except Exception:  # the loop must outlive any one bad round (API hiccup, odd object)
                log.exception("metrics loop round failed")
            await sleep_unless(stop, self.tick)
        for task in list(self._tasks):
            task.cancel()

    async def _tick(self) -> None:
        if self.gate is not None and not await asyncio.to_thread(self.gate.active):
            return  # another replica is active (Kopf paused this one too)
        now = time.monotonic()
        seen = set()
        for key, body in self.registry.items(c.SPECULATOR_KIND):
            seen.add(key)
            spec = MetricsSpec.model_validate(((body.get("spec") or {}).get("metrics")) or {})
            if not spec.enabled or key in self._busy or now < self._due.get(key, 0.0):
                continue
            self._due[key] = now + spec.interval_seconds
            self._busy.add(key)
            task = asyncio.create_task(self._scrape(key, body, spec), name=f"scrape {key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        for key in set(self._due) - seen:
            self._due.pop(key, None)
            self.store.forget(key)
            self.store.forget(canary_key(key))

    async def _query_canary(self, key: tuple[str, str], spec: MetricsSpec, deployment: str) -> None:
        """The canary Deployment's pods from Prometheus (the stable query's pod pattern excludes them)."""
        assert spec.prometheus_url
        try:
            delta, pods = await prometheus.query_acceptance(
                spec.prometheus_url, key[0], deployment, spec.window_seconds
            )
            self.store.record_query(canary_key(key), spec.window_seconds, delta, pods, time.time())
        except prometheus.PrometheusError as exc:
            self.store.record_query(canary_key(key), spec.window_seconds, None, 0, time.time(), str(exc))

    async def _scrape(self, key: tuple[str, str], body: dict[str, Any], spec: MetricsSpec) -> None:
        ns, name = key
        try:
            ctx = SpeculatorContext.of(body)
            opmetrics.SCRAPES.labels(ns, name).inc()
            if spec.source == "prometheus" and spec.prometheus_url:
                try:
                    delta, pods = await prometheus.query_acceptance(
                        spec.prometheus_url, ns, ctx.workload_name, spec.window_seconds
                    )
                    state = self.store.record_query(key, spec.window_seconds, delta, pods, time.time())
                except prometheus.PrometheusError as exc:
                    state = self.store.record_query(key, spec.window_seconds, None, 0, time.time(), str(exc))
                if ((body.get("status") or {}).get("canary") or {}).get("phase") in CANARY_ACTIVE:
                    await self._query_canary(key, spec, ctx.canary_name)
            else:
                pods = await asyncio.to_thread(
                    self.reads.list,
                    "Pod",
                    ns,
                    {
                        c.LABEL_SPECULATOR: name,
                        c.LABEL_COMPONENT: "vllm",
                        c.LABEL_MANAGED_BY: c.OPERATOR_NAME,
                    },
                )
                # Canary pods (a retrained draft on trial) get a window of their own.
                canary, stable = [], []
                for pod in pods:
                    on_canary = (pod["metadata"].get("labels") or {}).get(c.LABEL_TRACK)
                    (canary if on_canary else stable).append(pod)
                buckets = tuple(ctx.spec.tuning.load_buckets)
                all_targets = scraper.targets(stable, ctx.spec.vllm.port)
                canary_targets = scraper.targets(canary, ctx.spec.vllm.port)
                results = await scraper.scrape([*all_targets, *canary_targets], model_name=None)
                stamp = time.time()
                state = self.store.record_scrape(
                    key, spec.window_seconds, results[: len(all_targets)], stamp, buckets
                )
                if canary or self.store.get(canary_key(key)) is not None:
                    self.store.record_scrape(
                        canary_key(key), spec.window_seconds, results[len(all_targets) :], stamp
                    )
            if state.errors:
                opmetrics.SCRAPE_ERRORS.labels(ns, name).inc()
                log.info("scrape of %s/%s: %s", ns, name, "; ".join(state.errors))
            if scrape_changes_status(ctx, state):
                self.runner.trigger((c.SPECULATOR_KIND, ns, name))
            elif state.summary and state.summary.get("pods"):
                # No reconcile to update them: the exported gauges follow the live window from here.
                opmetrics.set_acceptance(ns, name, state.summary)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scraping %s/%s failed", ns, name)
        finally:
            self._busy.discard(key)


async def resync_loop(
    registry: Registry,
    runner: KeyedRunner,
    interval: float,
    stop: asyncio.Event,
    gate: PeeringGate | None = None,
) -> None:
    """Reconcile everything every `interval` seconds: catches whatever no event announced."""
    while not stop.is_set():
        if await sleep_unless(stop, interval):
            return
        try:
            if gate is not None and not await asyncio.to_thread(gate.active):
                continue
        except Exception:
            log.exception("peering check failed")
            continue
        for kind in (c.TRAINING_KIND, c.SPECULATOR_KIND, c.BENCHMARK_KIND):
            for (ns, name), _ in registry.items(kind):
                runner.trigger((kind, ns, name))


async def cache_loop(
    cache: ChildCache,
    kube: Kube,
    namespaces: list[str] | None,
    interval: float,
    stop: asyncio.Event,
    gate: PeeringGate | None = None,
    tick: float = 1.0,
) -> None:
    """Relist the cached kinds when this replica becomes the active one (at start, after a failover) and
    every `interval` seconds; while another replica is active, Kopf's watches are paused and the cache
    is not trusted."""
    listed_at: float | None = None
    while not stop.is_set():
        try:
            active = gate is None or await asyncio.to_thread(gate.active)
            if not active:
                cache.unsync()
                listed_at = None
            elif listed_at is None or time.monotonic() - listed_at >= interval:
                await asyncio.to_thread(cache.relist, kube, namespaces)
                listed_at = time.monotonic()
        except Exception:  # reads fall back to the API server until a relist succeeds
            log.exception("relisting the child cache failed")
            cache.unsync()
            listed_at = None
        if await sleep_unless(stop, tick):
            return
