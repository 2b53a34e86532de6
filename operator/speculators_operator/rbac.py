"""The permissions the operator needs, as data: the Helm chart and OLM bundle render their ClusterRole from
this list, docs/operator.md explains it, and a cluster test runs the operator under exactly these rules.

Least privilege: no secrets (Secrets reach pods by envFrom; the operator never reads them), no delete but
of Jobs and of children a spec change makes obsolete (switched backend, route off; everything else goes
through garbage collection), no write to pods.
"""

from __future__ import annotations

from typing import Any

from speculators_operator import constants as c

# (apiGroups, resources, verbs, why)
RULES: list[tuple[list[str], list[str], list[str], str]] = [
    (
        [c.GROUP],
        [c.TRAINING_PLURAL, c.SPECULATOR_PLURAL, c.BENCHMARK_PLURAL],
        ["get", "list", "watch", "patch"],
        "watch the custom resources; Kopf records its progress in speculators.ai/* annotations (patch)",
    ),
    (
        [c.GROUP],
        [c.SPECULATOR_PLURAL],
        ["create"],
        "create the Speculator of SpeculatorTraining.spec.deploy (server-side apply)",
    ),
    (
        [c.GROUP],
        [c.TRAINING_PLURAL],
        ["create"],
        "create a Speculator's retrain, SpeculatorTraining <name>-r<N> (spec.retrain)",
    ),
    (
        [c.GROUP],
        [f"{c.TRAINING_PLURAL}/status", f"{c.SPECULATOR_PLURAL}/status", f"{c.BENCHMARK_PLURAL}/status"],
        ["get", "patch", "update"],
        "write status through the status subresource",
    ),
    (
        [c.GROUP],
        [
            f"{c.TRAINING_PLURAL}/finalizers",
            f"{c.SPECULATOR_PLURAL}/finalizers",
            f"{c.BENCHMARK_PLURAL}/finalizers",
        ],
        ["update"],
        "blockOwnerDeletion on children's ownerReferences (OpenShift OwnerReferencesPermissionEnforcement)",
    ),
    (
        ["batch"],
        ["jobs"],
        ["get", "list", "watch", "create", "delete"],
        "one Job per step; a Job whose inputs changed is deleted and created again",
    ),
    (
        ["apps"],
        ["deployments"],
        ["get", "list", "watch", "create", "patch"],
        "the vLLM Deployment (server-side apply)",
    ),
    (
        [""],
        ["services"],
        ["get", "list", "watch", "create", "patch"],
        "the Speculator's Service and the headless training Service (watched: drift, the child cache)",
    ),
    (
        ["apps"],
        ["deployments"],
        ["delete"],
        "the vLLM Deployment of a Speculator switched to backend kserve or llmisvc; a decided canary; a "
        "benchmark's baseline when the run ends",
    ),
    (
        [""],
        ["services"],
        ["delete"],
        "the Service of a Speculator switched to backend kserve or llmisvc; a benchmark's baseline Service",
    ),
    (
        ["serving.kserve.io"],
        ["inferenceservices"],
        ["get", "list", "watch", "create", "patch", "delete"],
        "backend kserve: the InferenceService (server-side apply; deleted when switched back)",
    ),
    (
        ["serving.kserve.io"],
        ["servingruntimes"],
        ["get", "create", "patch", "delete"],
        "backend kserve: the vLLM ServingRuntime (server-side apply; deleted when switched back)",
    ),
    (
        ["trainer.kubeflow.org"],
        ["trainjobs"],
        ["get", "list", "watch", "create", "delete"],
        "training.runtime trainjob: the train step's Kubeflow Trainer TrainJob (replaced when inputs change)",
    ),
    (
        ["serving.kserve.io"],
        ["llminferenceservices"],
        ["get", "list", "watch", "create", "patch", "delete"],
        "backend llmisvc: the LLMInferenceService (server-side apply; deleted when switched back)",
    ),
    (
        ["route.openshift.io"],
        ["routes"],
        ["get", "list", "watch", "create", "patch", "delete"],
        "spec.route: the Route and its admitted host (deleted when spec.route is switched off)",
    ),
    (
        ["route.openshift.io"],
        ["routes/custom-host"],
        ["create"],
        "spec.route.host: OpenShift checks this to let a Route set its own host",
    ),
    (
        ["kueue.x-k8s.io"],
        ["workloads"],
        ["get", "list", "watch"],
        "scheduling.queueName: why Kueue has not admitted a step yet (the Workload's QuotaReserved reason)",
    ),
    ([""], ["persistentvolumeclaims"], ["get", "create"], "workspace and model-cache claims"),
    ([""], ["pods"], ["get", "list", "watch"], "termination messages of Job pods; vLLM pod IPs to scrape"),
    ([""], ["events"], ["create", "patch"], "Events on every transition and failure"),
    ([""], ["namespaces"], ["get", "list", "watch"], "Kopf's namespace observer (which namespaces to serve)"),
    (
        ["apiextensions.k8s.io"],
        ["customresourcedefinitions"],
        ["get", "list", "watch"],
        "Kopf notices CRDs being installed or removed",
    ),
]

PEERING_RULES: list[tuple[list[str], list[str], list[str], str]] = [
    (
        ["kopf.dev"],
        ["kopfpeerings", "clusterkopfpeerings"],
        ["get", "list", "watch", "patch"],
        "only with --peering: Kopf's peering between replicas",
    ),
]


def cluster_role(name: str = "speculators-operator", *, peering: bool = False) -> dict[str, Any]:
    rules = RULES + (PEERING_RULES if peering else [])
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {c.LABEL_PART_OF: c.PART_OF}},
        "rules": [{"apiGroups": g, "resources": r, "verbs": v} for g, r, v, _ in rules],
    }
