"""The level-triggered reconcile of each kind: observe -> derive (pure) -> apply -> write status.

It reads its own object from the API server and its children from the watch cache (cache.Reads: the API
server until the cache is synced); nothing else it decides on lives in memory except the acceptance window
the scrapes built, so running it twice in a row changes nothing the second time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from speculators_operator import constants as c
from speculators_operator import opmetrics
from speculators_operator.cache import Reads
from speculators_operator.kube import Kube, KubeError
from speculators_operator.metrics.store import MetricsStore, canary_key
from speculators_operator.render import training as render_training
from speculators_operator.render import trainjob as render_trainjob
from speculators_operator.render.common import Images
from speculators_operator.status.benchmark import BenchmarkObserved, derive_benchmark
from speculators_operator.status.conditions import Cond, merge, now_iso
from speculators_operator.status.patch import merge_patch
from speculators_operator.status.plan import Plan
from speculators_operator.status.queue import held_by_kueue, workloads_by_owner
from speculators_operator.status.speculator import SpeculatorObserved, derive_speculator
from speculators_operator.status.training import TrainingObserved, derive_training

log = logging.getLogger(__name__)

INVALID_SPEC = "InvalidSpec"
CHILD_REJECTED = "ChildRejected"
# The API server refused a child for what it is (not for being busy): the spec has to change.
REJECTED_STATUSES = (400, 403, 422)


class SemanticError(Exception):
    """A problem with the object the API server could not know at admission; shown as Ready=False."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def failed_status(
    body: dict[str, Any], status: dict[str, Any] | None, reason: str, message: str, now: str
) -> dict[str, Any]:
    """The status to write when reconciling failed for a semantic reason: what was known, Ready=False."""
    out = dict(status if status is not None else body.get("status") or {})
    generation = body["metadata"].get("generation")
    kept = [
        Cond(c["type"], c["status"], c.get("reason", ""), c.get("message", ""))
        for c in out.get("conditions") or []
        if c.get("type") != "Ready"
    ]
    ready = Cond("Ready", "False", reason, message[:32768])
    out["conditions"] = merge((body.get("status") or {}).get("conditions"), [*kept, ready], generation, now)
    out["observedGeneration"] = generation
    out["phase"] = "Failed"
    return out


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def observed_children(objects: Iterable[dict[str, Any] | None]) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> the children observed in this reconcile."""
    return {
        (obj["kind"], obj["metadata"]["name"]): obj
        for obj in objects
        if obj is not None and obj.get("kind") and (obj.get("metadata") or {}).get("name")
    }


def _contains(live: dict[str, str] | None, wanted: dict[str, str] | None) -> bool:
    live = live or {}
    return all(live.get(k) == v for k, v in (wanted or {}).items())


def _owned_by(obj: dict[str, Any] | None, owner: dict[str, Any]) -> bool:
    """Ours: controlled by this very object (same uid), not by a deleted namesake being collected."""
    if obj is None:
        return False
    uid = owner["metadata"]["uid"]
    return any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in obj["metadata"].get("ownerReferences") or []
    )


def _controller(obj: dict[str, Any], kind: str) -> str | None:
    """Name of the object's controller when it is of `kind`."""
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind:
            return ref.get("name")
    return None


class Reconciler:
    def __init__(
        self, kube: Kube, store: MetricsStore, images: Images | None = None, reads: Reads | None = None
    ) -> None:
        self.kube = kube
        self.reads = reads or Reads(kube)  # children: from the watch cache once it is synced
        self.store = store
        self.images = images or Images()
        self._last_error: dict[tuple[str, str, str], str] = {}
        # (kind, namespace, name) -> (digest of what we applied, resourceVersion and generation the apply
        # returned): see _unchanged.
        self._applied: dict[tuple[str, str, str], tuple[str, str, int | None]] = {}

    def __call__(self, kind: str, namespace: str, name: str) -> None:
        started = time.monotonic()
        opmetrics.RECONCILES.labels(kind).inc()
        try:
            if kind == c.TRAINING_KIND:
                self.reconcile_training(namespace, name)
            elif kind == c.SPECULATOR_KIND:
                self.reconcile_speculator(namespace, name)
            elif kind == c.BENCHMARK_KIND:
                self.reconcile_benchmark(namespace, name)
            else:
                raise ValueError(f"unknown kind {kind!r}")
            self._last_error.pop((kind, namespace, name), None)
        except Exception as exc:
            opmetrics.ERRORS.labels(kind).inc()
            self._report_error(kind, namespace, name, exc)
            raise
        finally:
            opmetrics.LATENCY.labels(kind).observe(time.monotonic() - started)

    def _report_error(self, kind: str, namespace: str, name: str, exc: Exception) -> None:
        """A Warning Event per distinct error (retries of the same error do not flood the namespace)."""
        message = str(exc)
        if self._last_error.get((kind, namespace, name)) == message:
            return
        self._last_error[(kind, namespace, name)] = message
        reason = exc.reason if isinstance(exc, SemanticError) else "ReconcileError"
        try:
            body = self.kube.get(kind, namespace, name)
            if body is not None:
                self.kube.post_event(body, "Warning", reason, message)
        except Exception:  # best effort: the caller logs the error itself
            log.debug("could not post the error event", exc_info=True)

    # -- SpeculatorTraining ------------------------------------------------------------------------

    def observe_training(self, body: dict[str, Any]) -> TrainingObserved:
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        selector = {c.LABEL_TRAINING: name, c.LABEL_MANAGED_BY: c.OPERATOR_NAME}
        observed = TrainingObserved()
        workloads = self.reads.list("Job", ns, selector)
        if self.kube.serves("TrainJob"):  # runtime trainjob (or a TrainJob left from it)
            workloads += self.kube.list("TrainJob", ns, selector)
        for job in workloads:
            step = (job["metadata"].get("annotations") or {}).get(c.ANNOTATION_STEP)
            if (
                step
                and _owned_by(job, body)
                and job["metadata"]["name"] == render_training.job_name(name, step)
            ):
                observed.jobs[step] = job
        queued = [j for j in observed.jobs.values() if held_by_kueue(j)]
        observed.kueue_installed = not queued or self.kube.serves("Workload")
        if queued and observed.kueue_installed:
            # Why Kueue holds a step back: its Workload, controller-owned by the Job.
            by_owner = workloads_by_owner(self.kube.list("Workload", ns))
            observed.queue = {
                j["metadata"]["name"]: by_owner[j["metadata"]["name"]]
                for j in queued
                if j["metadata"]["name"] in by_owner
            }
        for pod in self.reads.list("Pod", ns, selector):
            pod_labels = pod["metadata"].get("labels") or {}
            # A TrainJob's pods belong to its JobSet (named after it), a step Job's to that Job.
            job_name = pod_labels.get(render_trainjob.JOBSET_NAME_LABEL) or pod_labels.get(c.JOB_NAME_LABEL)
            if job_name:
                observed.pods.setdefault(job_name, []).append(pod)
        if not ((body.get("spec") or {}).get("output") or {}).get("pvc", {}).get("claimName"):
            observed.workspace = self.kube.get("PersistentVolumeClaim", ns, f"{name}-workspace")
        owner = _controller(body, c.SPECULATOR_KIND)
        if owner is not None:
            # A retrain: the gate compares with what its Speculator serves now.
            speculator = self.kube.get(c.SPECULATOR_KIND, ns, owner)
            if speculator is not None and _owned_by(body, speculator):
                observed.retrain_of = speculator
                served = ((speculator.get("status") or {}).get("draft") or {}).get("training") or (
                    ((speculator.get("spec") or {}).get("draft") or {}).get("trainingRef") or {}
                ).get("name")
                if served and served != name:
                    observed.target_training = self.kube.get(c.TRAINING_KIND, ns, served)
        deploy = (body.get("spec") or {}).get("deploy")
        if deploy is not None:
            target = self.kube.get(c.SPECULATOR_KIND, ns, deploy.get("name") or name)
            observed.deploy_target = target
            observed.speculator = target if _owned_by(target, body) else None
            if target is not None and observed.speculator is None:
                # Who serves there now, and how well (the promotion gate's bar; the newer promotion wins).
                ref = (((target.get("spec") or {}).get("draft") or {}).get("trainingRef") or {}).get("name")
                controller = _controller(target, c.TRAINING_KIND)
                seen: dict[str, dict[str, Any] | None] = {}
                for other in {ref, controller} - {None, name}:
                    seen[other] = self.kube.get(c.TRAINING_KIND, ns, other)
                observed.target_training = seen.get(ref) if ref else None
                observed.target_controller = seen.get(controller) if controller else None
        return observed

    def reconcile_training(self, namespace: str, name: str) -> None:
        body = self.kube.get(c.TRAINING_KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            opmetrics.set_phase(c.TRAINING_KIND, namespace, name, None)
            opmetrics.set_progress(namespace, name, None)
            return
        plan = self._derive(body, lambda: derive_training(body, self.observe_training(body), self.images))
        self.execute(body, plan)
        opmetrics.set_phase(c.TRAINING_KIND, namespace, name, plan.status.get("phase"))
        opmetrics.set_progress(namespace, name, (plan.status.get("progress") or {}).get("percent"))

    # -- Speculator --------------------------------------------------------------------------------

    def observe_speculator(self, body: dict[str, Any]) -> SpeculatorObserved:
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        spec = body.get("spec") or {}
        observed = SpeculatorObserved()
        ref = ((spec.get("draft") or {}).get("trainingRef") or {}).get("name")
        if ref:
            observed.training = self.kube.get(c.TRAINING_KIND, ns, ref)
        job = self.reads.get("Job", ns, f"{name}-resolve")
        if _owned_by(job, body):
            observed.resolve_job = job
            observed.resolve_pods = self.reads.list(
                "Pod", ns, {c.JOB_NAME_LABEL: f"{name}-resolve", c.LABEL_MANAGED_BY: c.OPERATOR_NAME}
            )
        dep = self.reads.get("Deployment", ns, f"{name}-vllm")
        observed.deployment = dep if _owned_by(dep, body) else None
        canary = self.reads.get("Deployment", ns, f"{name}-vllm-canary")
        observed.canary = canary if _owned_by(canary, body) else None
        if spec.get("retrain") or (body.get("status") or {}).get("retrain"):
            for training in self.kube.list(c.TRAINING_KIND, ns, {c.LABEL_SPECULATOR: name}):
                if _owned_by(training, body):
                    observed.retrains[training["metadata"]["name"]] = training
        capture = (spec.get("traffic") or {}).get("capture") or {}
        if capture.get("enabled") and not (capture.get("pvc") or {}).get("claimName"):
            observed.capture_pvc = self.kube.get("PersistentVolumeClaim", ns, f"{name}-traffic")
        svc = self.reads.get("Service", ns, name)
        observed.service = svc if _owned_by(svc, body) else None
        # backend kserve, or what is left of it after a switch back (discovery first: no KServe, no get)
        observed.kserve_served = self.kube.serves("InferenceService")
        if observed.kserve_served:
            isvc = self.kube.get("InferenceService", ns, name)
            observed.inference_service = isvc if _owned_by(isvc, body) else None
            if observed.inference_service is not None:
                # KServe's Deployments: which draft the stable and canary predictor pods serve.
                for attr, suffix in (("kserve_predictor", ""), ("kserve_canary", "-canary")):
                    dep = self.kube.get("Deployment", ns, f"{name}{suffix}-predictor")
                    setattr(observed, attr, dep if _owned_by(dep, observed.inference_service) else None)
            runtime = self.kube.get("ServingRuntime", ns, f"{name}-vllm")
            observed.serving_runtime = runtime if _owned_by(runtime, body) else None
        observed.llmisvc_served = self.kube.serves("LLMInferenceService")
        if observed.llmisvc_served:
            llmisvc = self.kube.get("LLMInferenceService", ns, name)
            observed.llm_inference_service = llmisvc if _owned_by(llmisvc, body) else None
            if observed.llm_inference_service is not None:
                dep = self.kube.get("Deployment", ns, f"{name}-kserve")
                observed.llmisvc_workload = dep if _owned_by(dep, observed.llm_inference_service) else None
        observed.routes_served = self.kube.serves("Route")
        if observed.routes_served:
            route = self.kube.get("Route", ns, name)
            observed.route = route if _owned_by(route, body) else None
        cache = spec.get("cache") or {}
        if cache.get("size") is not None and not cache.get("claimName"):
            observed.cache = self.kube.get("PersistentVolumeClaim", ns, f"{name}-cache")
        observed.pods = self.reads.list(
            "Pod",
            ns,
            {c.LABEL_SPECULATOR: name, c.LABEL_COMPONENT: "vllm", c.LABEL_MANAGED_BY: c.OPERATOR_NAME},
        )
        observed.acceptance = self.store.get((ns, name))
        observed.canary_acceptance = self.store.get(canary_key((ns, name)))
        return observed

    def reconcile_speculator(self, namespace: str, name: str) -> None:
        body = self.kube.get(c.SPECULATOR_KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            opmetrics.set_phase(c.SPECULATOR_KIND, namespace, name, None)
            opmetrics.forget_acceptance(namespace, name)
            opmetrics.set_loop(namespace, name, None)
            return
        observed = self.observe_speculator(body)
        plan = self._derive(body, lambda: derive_speculator(body, observed, self.images))
        children = (
            observed.deployment,
            observed.canary,
            observed.service,
            observed.inference_service,
            observed.serving_runtime,
            observed.llm_inference_service,
            observed.route,
        )
        self.execute(body, plan, observed_children(children))
        opmetrics.set_phase(c.SPECULATOR_KIND, namespace, name, plan.status.get("phase"))
        # The live window (status.acceptance is refreshed at most once per window).
        live = self.store.get((namespace, name))
        fresh = live.summary if live is not None and live.summary and live.summary.get("pods") else None
        opmetrics.set_acceptance(namespace, name, fresh or plan.status.get("acceptance"))
        opmetrics.set_loop(namespace, name, plan.status)

    # -- SpeculatorBenchmark -----------------------------------------------------------------------

    def observe_benchmark(self, body: dict[str, Any]) -> BenchmarkObserved:
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        spec = body.get("spec") or {}
        observed = BenchmarkObserved()
        ref = (spec.get("speculatorRef") or {}).get("name")
        if ref:
            observed.speculator = self.kube.get(c.SPECULATOR_KIND, ns, ref)
        for attr, kind, child in (
            ("deployment", "Deployment", f"{name}-baseline"),
            ("service", "Service", f"{name}-baseline"),
            ("job", "Job", f"{name}-benchmark"),
        ):
            obj = self.reads.get(kind, ns, child)
            setattr(observed, attr, obj if _owned_by(obj, body) else None)
        if observed.job is not None:
            observed.pods = self.reads.list(
                "Pod", ns, {c.JOB_NAME_LABEL: f"{name}-benchmark", c.LABEL_MANAGED_BY: c.OPERATOR_NAME}
            )
        if not (spec.get("results") or {}).get("claimName"):
            observed.results_pvc = self.kube.get("PersistentVolumeClaim", ns, f"{name}-results")
        return observed

    def reconcile_benchmark(self, namespace: str, name: str) -> None:
        body = self.kube.get(c.BENCHMARK_KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            opmetrics.set_phase(c.BENCHMARK_KIND, namespace, name, None)
            return
        observed = self.observe_benchmark(body)
        plan = self._derive(body, lambda: derive_benchmark(body, observed, self.images))
        self.execute(body, plan, observed_children((observed.deployment, observed.service)))
        opmetrics.set_phase(c.BENCHMARK_KIND, namespace, name, plan.status.get("phase"))

    # -- shared ------------------------------------------------------------------------------------

    def _derive(self, body: dict[str, Any], derive: Any) -> Plan:
        """Run a derive function; a spec the renderer refuses becomes InvalidSpec (an object admitted
        under an older, looser CRD, or a rule only the renderer knows)."""
        try:
            return derive()
        except (ValueError, TypeError) as exc:  # pydantic's ValidationError and SourceError are ValueErrors
            message = f"the operator cannot render this spec: {exc}"
            self._write_failure(body, None, INVALID_SPEC, message)
            raise SemanticError(INVALID_SPEC, message) from exc

    def _write_failure(
        self, body: dict[str, Any], status: dict[str, Any] | None, reason: str, message: str
    ) -> None:
        meta = body["metadata"]
        new = failed_status(body, status, reason, message, now_iso())
        patch = merge_patch(body.get("status"), new)
        if patch:
            self.kube.patch_status(body["kind"], meta["namespace"], meta["name"], patch)

    def _unchanged(self, obj: dict[str, Any], observed: dict[tuple[str, str], dict[str, Any]]) -> bool:
        """The same object was applied before and nobody changed what we own since: skip the call.

        Unchanged when the live object is at the version our apply got back, or, for kinds with a
        generation, when only its status moved on (the Deployment controller's rollout updates): same
        generation as after our apply and our labels and annotations still on it. Drift, by anyone,
        bumps the generation (spec) or removes a label (metadata) and is applied over."""
        m = obj["metadata"]
        live = observed.get((obj["kind"], m["name"]))
        applied = self._applied.get((obj["kind"], m["namespace"], m["name"]))
        if live is None or applied is None or applied[0] != _digest(obj):
            return False
        live_meta = live.get("metadata") or {}
        if live_meta.get("resourceVersion") == applied[1]:
            return True
        generation = live_meta.get("generation")
        return (
            generation is not None
            and generation == applied[2]
            and _contains(live_meta.get("labels"), m.get("labels"))
            and _contains(live_meta.get("annotations"), m.get("annotations"))
        )

    def execute(
        self,
        owner: dict[str, Any],
        plan: Plan,
        observed: dict[tuple[str, str], dict[str, Any]] | None = None,
    ) -> None:
        """Carry out a plan: deletes, creates, applies (of objects that would change), then one status
        patch if anything changed."""
        meta = owner["metadata"]
        for obj in plan.delete:
            m = obj["metadata"]
            self.kube.delete(obj["kind"], m["namespace"], m["name"], uid=m.get("uid"))
        writes = [(self.kube.create, obj) for obj in plan.create] + [
            (self.kube.apply, obj) for obj in plan.apply
        ]
        for write, obj in writes:
            applying = write == self.kube.apply
            if applying and self._unchanged(obj, observed or {}):
                continue
            try:
                result = write(obj)
                if applying and isinstance(result, dict):
                    m = obj["metadata"]
                    got = result.get("metadata") or {}
                    if got.get("resourceVersion"):
                        self._applied[(obj["kind"], m["namespace"], m["name"])] = (
                            _digest(obj),
                            got["resourceVersion"],
                            got.get("generation"),
                        )
            except KubeError as exc:
                if exc.status not in REJECTED_STATUSES:
                    raise  # conflicts, timeouts, 5xx: transient, retried as they are
                what = f"{obj['kind']} {obj['metadata']['name']}"
                message = f"the API server refused {what}: {exc.message}"
                self._write_failure(owner, plan.status, CHILD_REJECTED, message)
                raise SemanticError(CHILD_REJECTED, message) from exc
        patch = merge_patch(owner.get("status"), plan.status)
        if patch:
            self.kube.patch_status(owner["kind"], meta["namespace"], meta["name"], patch)
        for event in plan.events:
            try:
                self.kube.post_event(owner, event.type, event.reason, event.message)
            except KubeError as exc:
                log.warning(
                    "could not post event %s on %s/%s: %s", event.reason, meta["namespace"], meta["name"], exc
                )
