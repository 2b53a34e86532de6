"""Periodic work without finalizers: acceptance scrapes per Speculator, a slow resync of everything, and
the relists that keep the child cache true."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, NamedTuple

from speculators_core.vllm_metrics.acceptance import Counters
from speculators_operator import constants as c
from speculators_operator import opmetrics
from speculators_operator.api.serving import MetricsSpec
from speculators_operator.cache import ChildCache, Reads
from speculators_operator.handlers.peering import PeeringGate
from speculators_operator.handlers.registry import Registry
from speculators_operator.handlers.runner import KeyedRunner
from speculators_operator.kube import Kube
from speculators_operator.metrics import prometheus, scraper
from speculators_operator.metrics.store import AcceptanceState, MetricsStore, canary_key
from speculators_operator.render.speculator import SpeculatorContext
from speculators_operator.status.retrain import ACTIVE as CANARY_ACTIVE
from speculators_operator.status.speculator import scrape_changes_status

log = logging.getLogger(__name__)

Member = tuple[tuple[str, str], dict[str, Any], MetricsSpec]  # (namespace, name), body, spec.metrics
Group = tuple[str, str, int, int]  # Prometheus URL, namespace, windowSeconds, intervalSeconds
ANSWER_TTL = 5.0  # seconds a Prometheus round answers the members of its group that come due after it


class Answer(NamedTuple):
    """A group's last Prometheus round."""

    at: float  # monotonic
    found: dict[str, tuple[Counters, int]]  # deployment -> (window increases, pods)
    error: str | None
    stamp: float  # wall clock, what the store records


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
    """Every tick, scrape the Speculators whose interval has passed (each at most once at a time), and
    query Prometheus once per group of Speculators it serves."""

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
        self._busy_groups: set[Group] = set()
        self._answers: dict[Group, Answer] = {}
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
        # Speculators read from Prometheus go in groups (server, namespace, window, interval): one round
        # of queries answers a whole group, and members that come due within ANSWER_TTL of it reuse the
        # answer. Each keeps its own phase, so the status writes a round can cause stay spread out.
        groups: dict[Group, list[Member]] = {}
        for key, body in self.registry.items(c.SPECULATOR_KIND):
            seen.add(key)
            spec = MetricsSpec.model_validate(((body.get("spec") or {}).get("metrics")) or {})
            if not spec.enabled or now < self._due.get(key, 0.0):
                continue
            if spec.source == "prometheus" and spec.prometheus_url:
                group = (spec.prometheus_url, key[0], spec.window_seconds, spec.interval_seconds)
                groups.setdefault(group, []).append((key, body, spec))
                continue
            if key in self._busy:
                continue
            self._due[key] = now + spec.interval_seconds
            self._busy.add(key)
            self._spawn(self._scrape(key, body, spec), f"scrape {key}")
        for group, due in groups.items():
            if group in self._busy_groups:
                continue  # its round is under way: these members take its answer next tick
            for key, _, _ in due:
                self._due[key] = now + group[3]
            answer = self._answers.get(group)
            if answer is not None and now - answer.at < min(ANSWER_TTL, group[3] / 2):
                self._record_group(due, answer)
                continue
            self._busy_groups.add(group)
            self._spawn(self._query_group(group, due), f"query {group[:2]}")
        for group in [g for g in self._answers if g not in groups and g not in self._busy_groups]:
            if now - self._answers[group].at >= ANSWER_TTL:
                del self._answers[group]
        for key in set(self._due) - seen:
            self._due.pop(key, None)
            self.store.forget(key)
            self.store.forget(canary_key(key))

    def _spawn(self, work: Any, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _query_group(self, group: Group, members: list[Member]) -> None:
        """One round of Prometheus queries for a group, recorded for the members due now and kept for
        those due in the next ANSWER_TTL seconds."""
        url, ns, window, _ = group
        try:
            try:
                found, error = await prometheus.query_namespace(url, ns, window), None
            except prometheus.PrometheusError as exc:
                found, error = {}, str(exc)
            self._answers[group] = answer = Answer(time.monotonic(), found, error, time.time())
            self._record_group(members, answer)
        finally:
            self._busy_groups.discard(group)

    def _record_group(self, members: list[Member], answer: Answer) -> None:
        """Each member's window from a round's answer (and its active canary's: a Deployment of its own)."""
        for key, body, spec in members:
            try:
                ctx = SpeculatorContext.of(body)
                opmetrics.SCRAPES.labels(*key).inc()
                deployments = [(key, ctx.workload_name)]
                if ((body.get("status") or {}).get("canary") or {}).get("phase") in CANARY_ACTIVE:
                    deployments.append((canary_key(key), ctx.canary_name))
                states = []
                for store_key, deployment in deployments:
                    delta, pods = answer.found.get(deployment, (Counters(0.0, 0.0, 0.0, {}), 0))
                    delta_or_none = None if answer.error else delta
                    states.append(
                        self.store.record_query(
                            store_key, spec.window_seconds, delta_or_none, pods, answer.stamp, answer.error
                        )
                    )
                self._after_scrape(key, ctx, states[0])
            except Exception:
                log.exception("recording the metrics of %s/%s failed", *key)

    def _after_scrape(self, key: tuple[str, str], ctx: SpeculatorContext, state: AcceptanceState) -> None:
        ns, name = key
        if state.errors:
            opmetrics.SCRAPE_ERRORS.labels(ns, name).inc()
            log.info("scrape of %s/%s: %s", ns, name, "; ".join(state.errors))
        if scrape_changes_status(ctx, state):
            self.runner.trigger((c.SPECULATOR_KIND, ns, name))
        elif state.summary and state.summary.get("pods"):
            # No reconcile to update them: the exported gauges follow the live window from here.
            opmetrics.set_acceptance(ns, name, state.summary)

    async def _scrape(self, key: tuple[str, str], body: dict[str, Any], spec: MetricsSpec) -> None:
        """Scrape the Speculator's ready vLLM pods (source pods)."""
        ns, name = key
        try:
            ctx = SpeculatorContext.of(body)
            opmetrics.SCRAPES.labels(ns, name).inc()
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
            self._after_scrape(key, ctx, state)
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
