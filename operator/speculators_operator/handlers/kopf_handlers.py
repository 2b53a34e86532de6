"""Kopf wiring: every handler only routes to the one reconcile of the owning object.

- create/update/resume of a CR: reconcile now (Kopf retries failures, progress under speculators.ai/*);
- watch events of the CRs: keep the registry for the periodic loops; wake dependents;
- watch events of our Jobs, TrainJobs, Pods, Deployments, Services, (LLM)InferenceServices and Routes
  (server-side label selector): wake their owner; those of Jobs, Pods, Deployments and Services also keep
  the child cache the reconciles read.
No delete handlers, timers or daemons: ownerReferences + garbage collection delete the children, and
nothing here needs a finalizer, so deletion never waits for the operator.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from speculators_operator import constants as c
from speculators_operator.cache import ChildCache
from speculators_operator.handlers.reconcile import Reconciler, SemanticError
from speculators_operator.handlers.registry import Registry
from speculators_operator.handlers.runner import KeyedRunner
from speculators_operator.metrics.store import MetricsStore
from speculators_operator.status import queue

log = logging.getLogger(__name__)
OURS = f"{c.LABEL_MANAGED_BY}={c.OPERATOR_NAME}"


@dataclass
class OperatorContext:
    """Shared by handlers (through Kopf's memo) and the periodic loops."""

    reconciler: Reconciler
    runner: KeyedRunner
    registry: Registry
    store: MetricsStore
    cache: ChildCache = field(default_factory=ChildCache)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


def configure_settings(settings: kopf.OperatorSettings) -> None:
    """Kopf's bookkeeping under our own prefix and finalizer name; watch only our children."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=c.ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = c.FINALIZER
    # We post our own Events on transitions; Kopf's are limited to handler failures.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 16
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    for group, plural in (
        ("batch", "jobs"),
        ("", "pods"),
        ("apps", "deployments"),
        ("", "services"),
        ("serving.kserve.io", "inferenceservices"),
        ("serving.kserve.io", "llminferenceservices"),
        ("trainer.kubeflow.org", "trainjobs"),
        ("route.openshift.io", "routes"),
    ):
        key = (group, plural) if group else plural
        settings.watching.label_selectors[key] = OURS


@kopf.on.startup()
def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    configure_settings(settings)


@kopf.on.cleanup()
async def _cleanup(memo: Any, **_: Any) -> None:
    # Kopf handles SIGTERM itself; tell our loops (and Kopf's own waiter on the stop flag) to finish, or
    # Kopf would wait for them as "hung" tasks.
    ctx: OperatorContext = memo.ctx
    ctx.stop.set()


@kopf.on.probe(id="tracked")
def _probe(memo: Any, **_: Any) -> dict[str, int]:
    ctx: OperatorContext = memo.ctx
    return {
        kind: len(ctx.registry.items(kind)) for kind in (c.TRAINING_KIND, c.SPECULATOR_KIND, c.BENCHMARK_KIND)
    }


async def _reconcile_now(memo: Any, kind: str, namespace: str, name: str) -> None:
    ctx: OperatorContext = memo.ctx
    try:
        await ctx.runner.run_now((kind, namespace, name))
    except SemanticError:
        # Already in status (Ready=False) and an Event; the runner retries with backoff (an unchanged
        # spec cannot fix itself quickly), and a new generation comes back through this handler.
        ctx.runner.trigger((kind, namespace, name))
    except Exception as exc:
        raise kopf.TemporaryError(f"reconcile failed: {exc}", delay=10) from exc


@kopf.on.resume(c.GROUP, c.VERSION, c.TRAINING_PLURAL, id="reconcile")
@kopf.on.create(c.GROUP, c.VERSION, c.TRAINING_PLURAL, id="reconcile")
@kopf.on.update(c.GROUP, c.VERSION, c.TRAINING_PLURAL, id="reconcile")
async def training_changed(name: str, namespace: str, memo: Any, **_: Any) -> None:
    await _reconcile_now(memo, c.TRAINING_KIND, namespace, name)


@kopf.on.resume(c.GROUP, c.VERSION, c.SPECULATOR_PLURAL, id="reconcile")
@kopf.on.create(c.GROUP, c.VERSION, c.SPECULATOR_PLURAL, id="reconcile")
@kopf.on.update(c.GROUP, c.VERSION, c.SPECULATOR_PLURAL, id="reconcile")
async def speculator_changed(name: str, namespace: str, memo: Any, **_: Any) -> None:
    await _reconcile_now(memo, c.SPECULATOR_KIND, namespace, name)


@kopf.on.resume(c.GROUP, c.VERSION, c.BENCHMARK_PLURAL, id="reconcile")
@kopf.on.create(c.GROUP, c.VERSION, c.BENCHMARK_PLURAL, id="reconcile")
@kopf.on.update(c.GROUP, c.VERSION, c.BENCHMARK_PLURAL, id="reconcile")
async def benchmark_changed(name: str, namespace: str, memo: Any, **_: Any) -> None:
    await _reconcile_now(memo, c.BENCHMARK_KIND, namespace, name)


@kopf.on.event(c.GROUP, c.VERSION, c.BENCHMARK_PLURAL)
async def benchmark_event(
    event: dict[str, Any], body: Any, name: str, namespace: str, memo: Any, **_: Any
) -> None:
    ctx: OperatorContext = memo.ctx
    if event.get("type") == "DELETED":
        ctx.registry.remove(c.BENCHMARK_KIND, namespace, name)
        ctx.runner.forget((c.BENCHMARK_KIND, namespace, name))
    else:
        ctx.registry.upsert(c.BENCHMARK_KIND, dict(body))


@kopf.on.event(c.GROUP, c.VERSION, c.TRAINING_PLURAL)
async def training_event(
    event: dict[str, Any], body: Any, name: str, namespace: str, memo: Any, **_: Any
) -> None:
    ctx: OperatorContext = memo.ctx
    if event.get("type") == "DELETED":
        ctx.registry.remove(c.TRAINING_KIND, namespace, name)
        ctx.runner.forget((c.TRAINING_KIND, namespace, name))
    else:
        ctx.registry.upsert(c.TRAINING_KIND, dict(body))
    # A training's status drives the Speculators that reference it, and the one whose retrain it is.
    speculators = set(ctx.registry.speculators_of_training(namespace, name))
    retrain_of = ((body.get("metadata") or {}).get("labels") or {}).get(c.LABEL_SPECULATOR)
    if retrain_of:
        speculators.add(retrain_of)
    for speculator in speculators:
        ctx.runner.trigger((c.SPECULATOR_KIND, namespace, speculator))


@kopf.on.event(c.GROUP, c.VERSION, c.SPECULATOR_PLURAL)
async def speculator_event(
    event: dict[str, Any], body: Any, name: str, namespace: str, labels: Any, memo: Any, **_: Any
) -> None:
    ctx: OperatorContext = memo.ctx
    if event.get("type") == "DELETED":
        ctx.registry.remove(c.SPECULATOR_KIND, namespace, name)
        ctx.runner.forget((c.SPECULATOR_KIND, namespace, name))
        ctx.store.forget((namespace, name))
    else:
        ctx.registry.upsert(c.SPECULATOR_KIND, dict(body))
    # A Speculator created by spec.deploy reports back into its training's Deployed condition, and into
    # those of other trainings deploying to it (one promoted later takes it over).
    owners = set(ctx.registry.trainings_deploying_to(namespace, name))
    owner = (labels or {}).get(c.LABEL_TRAINING)
    if owner:
        owners.add(owner)
    for training in owners:
        ctx.runner.trigger((c.TRAINING_KIND, namespace, training))
    # Benchmarks wait for their Speculator to be Ready (and read its live acceptance at the end).
    for benchmark in ctx.registry.benchmarks_of_speculator(namespace, name):
        ctx.runner.trigger((c.BENCHMARK_KIND, namespace, benchmark))


def _wake_owner(memo: Any, namespace: str, labels: Any) -> None:
    ctx: OperatorContext = memo.ctx
    labels = labels or {}
    if labels.get(c.LABEL_TRAINING):
        ctx.runner.trigger((c.TRAINING_KIND, namespace, labels[c.LABEL_TRAINING]))
    if labels.get(c.LABEL_SPECULATOR):
        ctx.runner.trigger((c.SPECULATOR_KIND, namespace, labels[c.LABEL_SPECULATOR]))
    if labels.get(c.LABEL_BENCHMARK):
        ctx.runner.trigger((c.BENCHMARK_KIND, namespace, labels[c.LABEL_BENCHMARK]))


def _child_changed(memo: Any, event: dict[str, Any], body: Any, namespace: str, labels: Any) -> None:
    ctx: OperatorContext = memo.ctx
    if event.get("type") == "DELETED":
        ctx.cache.remove(body.get("kind", ""), namespace, body.get("metadata", {}).get("name", ""))
    else:
        ctx.cache.upsert(body)
    _wake_owner(memo, namespace, labels)


@kopf.on.event("batch", "v1", "jobs", labels={c.LABEL_MANAGED_BY: c.OPERATOR_NAME})
async def job_event(
    event: dict[str, Any], body: Any, namespace: str, labels: Any, memo: Any, **_: Any
) -> None:
    _child_changed(memo, event, body, namespace, labels)


@kopf.on.event("trainer.kubeflow.org", "v1alpha1", "trainjobs", labels={c.LABEL_MANAGED_BY: c.OPERATOR_NAME})
async def trainjob_event(namespace: str, labels: Any, memo: Any, **_: Any) -> None:
    _wake_owner(memo, namespace, labels)


@kopf.on.event("apps", "v1", "deployments", labels={c.LABEL_MANAGED_BY: c.OPERATOR_NAME})
async def deployment_event(
    event: dict[str, Any], body: Any, namespace: str, labels: Any, memo: Any, **_: Any
) -> None:
    _child_changed(memo, event, body, namespace, labels)


@kopf.on.event("", "v1", "services", labels={c.LABEL_MANAGED_BY: c.OPERATOR_NAME})
async def service_event(
    event: dict[str, Any], body: Any, namespace: str, labels: Any, memo: Any, **_: Any
) -> None:
    _child_changed(memo, event, body, namespace, labels)


@kopf.on.event("", "v1", "pods", labels={c.LABEL_MANAGED_BY: c.OPERATOR_NAME})
async def pod_event(
    event: dict[str, Any], body: Any, namespace: str, labels: Any, memo: Any, **_: Any
) -> None:
    _child_changed(memo, event, body, namespace, labels)


# Watched only where the cluster serves them (Kopf skips kinds that are not installed).
@kopf.on.event(
    "serving.kserve.io", "v1beta1", "inferenceservices", labels={c.LABEL_MANAGED_BY: c.OPERATOR_NAME}
)
async def inference_service_event(namespace: str, labels: Any, memo: Any, **_: Any) -> None:
    _wake_owner(memo, namespace, labels)


@kopf.on.event(
    "serving.kserve.io", "v1alpha2", "llminferenceservices", labels={c.LABEL_MANAGED_BY: c.OPERATOR_NAME}
)
async def llm_inference_service_event(namespace: str, labels: Any, memo: Any, **_: Any) -> None:
    _wake_owner(memo, namespace, labels)


# Kueue's Workloads carry none of our labels (Kueue copies only integrations.labelKeysToCopy): the owning
# Job's name says which training to wake, when Kueue admits a step or says why it waits.
@kopf.on.event("kueue.x-k8s.io", "v1beta2", "workloads")
async def kueue_workload_event(body: Any, namespace: str, memo: Any, **_: Any) -> None:
    ctx: OperatorContext = memo.ctx
    job = queue.owner_of(body)
    training = ctx.registry.training_of_job(namespace, job) if job else None
    if training:
        ctx.runner.trigger((c.TRAINING_KIND, namespace, training))


@kopf.on.event("route.openshift.io", "v1", "routes", labels={c.LABEL_MANAGED_BY: c.OPERATOR_NAME})
async def route_event(namespace: str, labels: Any, memo: Any, **_: Any) -> None:
    _wake_owner(memo, namespace, labels)
