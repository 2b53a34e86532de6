"""A stand-in for Kubeflow Trainer v2.3's TrainJob controller (with JobSet), for the tests' control plane,
where Trainer's Go controllers and webhooks cannot run.

What it does, after Trainer's own code (pkg/runtime/core/trainingruntime.go, the torch plugin) and what a
run of Trainer v2.3.0 + JobSet v0.12.0 showed:
- the ClusterTrainingRuntime's replicatedJob `node` (its Job template), with each `runtimePatches` entry
  merged in order (pod labels/annotations merged, pod-spec fields set, volumes and containers by name);
- `spec.trainer` over container `node`: image, command and args replace, env merges by name,
  resourcesPerNode replaces resources; numNodes is the Job's completions and parallelism (Indexed);
- torchrun's rendezvous as PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK (the completion index),
  PET_MASTER_ADDR (`<tj>-node-0-0.<tj>`) and PET_MASTER_PORT (29500);
- one Job `<tj>-node-0` owned by the TrainJob (in Trainer, by its JobSet `<tj>`), pods labelled
  `jobset.sigs.k8s.io/jobset-name: <tj>`; the real Job controller and kwok run them;
- status: `Complete` (reason AllJobsCompleted) or `Failed` (reason FailedJobs, the Job's message) when the
  Job ends, and jobsStatus counts.
A JobSet restart (failurePolicy.maxRestarts) is not simulated: a failed Job fails the TrainJob.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from kubernetes.client.exceptions import ApiException

from localrun.kserve_standin import merge_by, merge_container

API = "trainer.kubeflow.org/v1alpha1"
NODE = "node"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def _patch_pod(pod: dict[str, Any], patch: dict[str, Any]) -> None:
    meta = patch.get("metadata") or {}
    pod_meta = pod.setdefault("metadata", {})
    for key in ("labels", "annotations"):
        if meta.get(key):
            pod_meta[key] = {**(pod_meta.get(key) or {}), **meta[key]}
    spec = pod.setdefault("spec", {})
    for key, value in (patch.get("spec") or {}).items():
        if key == "volumes":
            spec["volumes"] = merge_by(spec.get("volumes") or [], value, "name")
        elif key in ("containers", "initContainers"):
            mine = {c["name"]: c for c in spec.get(key) or []}
            for ctr in value:
                base = mine.get(ctr["name"], {"name": ctr["name"]})
                mine[ctr["name"]] = merge_container(base, ctr, append_args=False)
            spec[key] = list(mine.values())
        else:
            spec[key] = copy.deepcopy(value)


def job_of(trainjob: dict[str, Any], runtime: dict[str, Any]) -> dict[str, Any]:
    name = trainjob["metadata"]["name"]
    spec = trainjob["spec"]
    (node,) = [rj for rj in runtime["spec"]["template"]["spec"]["replicatedJobs"] if rj["name"] == NODE]
    job = copy.deepcopy(node["template"])
    pod = job["spec"]["template"]
    for patch in spec.get("runtimePatches") or []:
        for rj in ((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec", {}).get(
            "replicatedJobs"
        ) or []:
            if rj["name"] == NODE:
                _patch_pod(pod, ((rj.get("template") or {}).get("spec") or {}).get("template") or {})
    trainer = spec.get("trainer") or {}
    nodes = int(trainer.get("numNodes") or 1)
    nproc = int(trainer.get("numProcPerNode") or 1)
    pet = [
        {"name": "PET_NNODES", "value": str(nodes)},
        {"name": "PET_NPROC_PER_NODE", "value": str(nproc)},
        {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": COMPLETION_INDEX}}},
        {"name": "PET_MASTER_ADDR", "value": f"{name}-node-0-0.{name}"},
        {"name": "PET_MASTER_PORT", "value": "29500"},
    ]
    for ctr in pod["spec"]["containers"]:
        if ctr["name"] != NODE:
            continue
        for key in ("image", "command", "args"):
            if key in trainer:
                ctr[key] = list(trainer[key]) if isinstance(trainer[key], list) else trainer[key]
        if "resourcesPerNode" in trainer:
            ctr["resources"] = copy.deepcopy(trainer["resourcesPerNode"])
        ctr["env"] = merge_by(ctr.get("env") or [], [*(trainer.get("env") or []), *pet], "name")
    pod["metadata"].setdefault("labels", {})[JOBSET_NAME_LABEL] = name
    job["spec"].update(completionMode="Indexed", completions=nodes, parallelism=nodes)
    meta = trainjob["metadata"]
    job["apiVersion"], job["kind"] = "batch/v1", "Job"
    job["metadata"] = {
        "name": f"{name}-node-0",
        "namespace": meta["namespace"],
        "labels": {JOBSET_NAME_LABEL: name},
        "ownerReferences": [
            {"apiVersion": API, "kind": "TrainJob", "name": name, "uid": meta["uid"], "controller": True}
        ],
    }
    return job


class TrainerStandIn:
    """Runs every TrainJob of one namespace as Trainer would, until stopped."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.api = api
        self.ns = namespace
        self.errors: list[str] = []

    def _get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        try:
            return self.api.get(api_version, kind, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def reconcile(self, trainjob: dict[str, Any]) -> None:
        name = trainjob["metadata"]["name"]
        if any(c.get("status") == "True" for c in (trainjob.get("status") or {}).get("conditions") or []):
            return  # Complete or Failed: terminal
        runtime = self._get(API, "ClusterTrainingRuntime", trainjob["spec"]["runtimeRef"]["name"], None)
        if runtime is None:
            return
        job = self._get("batch/v1", "Job", f"{name}-node-0", self.ns)
        if job is None:
            self.api.create(job_of(trainjob, runtime), self.ns)
            return
        st = job.get("status") or {}
        jobs_status = [
            {
                "name": NODE,
                "active": st.get("active") or 0,
                "ready": st.get("ready") or 0,
                "succeeded": st.get("succeeded") or 0,
                "failed": st.get("failed") or 0,
                "suspended": 0,
            }
        ]
        status: dict[str, Any] = {"jobsStatus": jobs_status}
        for cond in st.get("conditions") or []:
            if cond.get("status") != "True":
                continue
            if cond["type"] == "Complete":
                status["conditions"] = [_cond("Complete", "AllJobsCompleted", "jobset completed")]
            elif cond["type"] == "Failed":
                status["conditions"] = [_cond("Failed", "FailedJobs", cond.get("message") or "jobset failed")]
        if (trainjob.get("status") or {}).get("jobsStatus") == jobs_status and "conditions" not in status:
            return
        self.api.request(
            "PATCH",
            f"/apis/{API}/namespaces/{self.ns}/trainjobs/{name}/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    def sync(self) -> None:
        for trainjob in self.api.list(API, "TrainJob", self.ns):
            if not trainjob["metadata"].get("deletionTimestamp"):
                self.reconcile(trainjob)

    def run(self, stop: threading.Event, every: float = 0.3) -> None:
        while not stop.wait(every):
            try:
                self.sync()
            except Exception as exc:  # an API hiccup: next round
                self.errors.append(repr(exc))


def _cond(type_: str, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
