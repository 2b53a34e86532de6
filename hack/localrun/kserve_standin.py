"""A stand-in for KServe's InferenceService controller in Standard (raw Deployment) mode, for the tests'
control plane, where KServe's Go controller cannot run (no images, no webhooks).

It does what KServe 0.20 does with the parts the operator relies on, after KServe's own code
(pkg/controller/v1beta1/inferenceservice: components/predictor.go, utils.MergeRuntimeContainers,
utils.MergePodSpec, raw_kube_reconciler):

- the predictor pod: the ServingRuntime's container `kserve-container` with the predictor's `model`
  container merged over it (fields replaced, `env` by name and `volumeMounts` by path, `args` appended to
  the runtime's), pod-level fields from the predictor, volumes of both;
- Deployment `<isvc>-predictor` with the predictor's labels and annotations on its pods and KServe's
  `app: isvc.<isvc>-predictor` selector, owned by the InferenceService; minReplicas less the ready
  canary replicas (never below 1), 0 when stopped;
- each `spec.canary[]` entry: its predictor laid over the stable one (mergo.WithOverride: maps merged,
  other set fields replace), Deployment `<isvc>-<name>-predictor` with `minReplicas` pods; Deployments
  of canaries no longer listed are deleted;
- status: observedGeneration, the in-cluster URL, PredictorReady/Ready from the stable Deployment,
  canaryStatuses and CanaryPredictorReady.

The real Deployment controller and kwok then run the pods. Traffic splitting (KServe's HTTPRoute weights)
is not simulated: the vLLM stand-ins count drafts per pod whatever sends the requests.
"""

from __future__ import annotations

import copy
import re
import threading
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

ISVC = "serving.kserve.io/v1beta1"
RUNTIME = "serving.kserve.io/v1alpha1"
FIELD_MANAGER = "kserve-standin"
# Predictor fields that configure KServe, not the pod.
PREDICTOR_ONLY = {
    "name",
    "minReplicas",
    "maxReplicas",
    "labels",
    "annotations",
    "scaleTarget",
    "scaleMetric",
    "autoScaling",
    "deploymentStrategy",
    "model",
    "canaryTrafficPercent",
    "containerConcurrency",
    "timeout",
    "logger",
    "batcher",
    "workerSpec",
}
MODEL_ONLY = {"modelFormat", "runtime", "storageUri", "storage", "protocolVersion"}


def merge_by(base: list[dict[str, Any]], over: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """A strategic-merge list: entries of `over` replace those of `base` with the same key, others add."""
    out = {item[key]: item for item in base}
    out.update({item[key]: item for item in over})
    return list(out.values())


def merge_container(
    runtime: dict[str, Any], model: dict[str, Any], *, append_args: bool = True
) -> dict[str, Any]:
    """KServe's MergeRuntimeContainers: the model container over the runtime's, args appended (a plain
    strategic merge, as for an LLMInferenceService over its preset, replaces them)."""
    out = copy.deepcopy(runtime)
    for key, value in model.items():
        if key in MODEL_ONLY or (key == "args" and append_args):
            continue
        if key == "env":
            out["env"] = merge_by(out.get("env") or [], value, "name")
        elif key == "volumeMounts":
            out["volumeMounts"] = merge_by(out.get("volumeMounts") or [], value, "mountPath")
        else:
            out[key] = copy.deepcopy(value)
    if append_args:
        out["args"] = [*(runtime.get("args") or []), *(model.get("args") or [])]
    return out


def render_preset(text: str, llmisvc: dict[str, Any], *, tls: bool = False) -> str:
    """Fill in the Go template expressions of KServe 0.20's llm presets (ReplaceVariables) for one
    LLMInferenceService: the ones config-llm-template.yaml uses, nothing more."""
    meta, spec = llmisvc["metadata"], llmisvc["spec"]
    tensor = (spec.get("parallelism") or {}).get("tensor")
    text = re.sub(
        r"\{\{- if and \.Spec\.Parallelism \.Spec\.Parallelism\.Tensor \}\}(.*?)\{\{- end \}\}",
        (lambda m: m.group(1).replace("{{ .Spec.Parallelism.Tensor }}", str(tensor))) if tensor else "",
        text,
    )
    text = re.sub(
        r"\{\{ if \.GlobalConfig\.EnableTLS \}\}(.*?)\{\{else\}\}(.*?)\{\{- end \}\}",
        lambda m: m.group(1) if tls else m.group(2),
        text,
    )
    text = re.sub(
        r"\{\{ if \.GlobalConfig\.EnableTLS \}\}(.*?)\{\{- end \}\}",
        lambda m: m.group(1) if tls else "",
        text,
    )
    text = re.sub(
        r"\{\{ ChildName \.ObjectMeta\.Name `([^`]*)` \}\}", lambda m: meta["name"] + m.group(1), text
    )
    text = text.replace("{{ shutdownTimeout .Spec.Template 15 }}", "15")
    text = text.replace("{{ kvTransferConfig .Spec.KVCacheOffloading }}", "")
    text = text.replace("{{ .Spec.Model.Name }}", str((spec.get("model") or {}).get("name") or meta["name"]))
    text = text.replace("{{ .ObjectMeta.Namespace }}", str(meta.get("namespace") or "default"))
    if "{{" in text:
        raise ValueError(
            f"a template expression this stand-in does not know: {text[text.index('{{') :][:80]}"
        )
    return text


def llmisvc_pod(preset_text: str, llmisvc: dict[str, Any], *, tls: bool = False) -> dict[str, Any]:
    """The main workload's pod spec KServe 0.20 makes of an LLMInferenceService over its preset
    (LLMInferenceServiceConfig): mergeSpecs' strategic merge, containers and volumes by name."""
    preset = yaml.safe_load(render_preset(preset_text, llmisvc, tls=tls))
    base = preset["spec"]["template"]
    over = llmisvc["spec"].get("template") or {}
    pod = {**base, **{k: copy.deepcopy(v) for k, v in over.items() if k not in ("containers", "volumes")}}
    containers = {c["name"]: c for c in base.get("containers") or []}
    for ctr in over.get("containers") or []:
        mine = containers.get(ctr["name"])
        containers[ctr["name"]] = merge_container(mine, ctr, append_args=False) if mine else ctr
    pod["containers"] = list(containers.values())
    pod["volumes"] = merge_by(base.get("volumes") or [], over.get("volumes") or [], "name")
    return pod


def predictor_pod(serving_runtime: dict[str, Any], predictor: dict[str, Any]) -> dict[str, Any]:
    """The pod spec KServe runs for `predictor` on `serving_runtime` (without KServe's own storage
    initializer, which its admin configures and this operator does not render)."""
    runtime = serving_runtime["spec"]
    (container,) = runtime["containers"]
    pod = {k: copy.deepcopy(v) for k, v in predictor.items() if k not in PREDICTOR_ONLY}
    pod["containers"] = [merge_container(container, predictor.get("model") or {})]
    pod["volumes"] = merge_by(runtime.get("volumes") or [], predictor.get("volumes") or [], "name")
    return pod


def canary_predictor(stable: dict[str, Any], canary: dict[str, Any]) -> dict[str, Any]:
    """buildCanaryPredictor: the canary's predictor over a copy of the stable one (mergo.WithOverride)."""
    out = copy.deepcopy(stable)
    for key, value in canary.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **copy.deepcopy(value)}
        elif value not in (None, "", [], {}):
            out[key] = copy.deepcopy(value)
    for key in ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling"):
        out.pop(key, None)
    return out


def _owner(isvc: dict[str, Any]) -> dict[str, Any]:
    meta = isvc["metadata"]
    return {
        "apiVersion": ISVC,
        "kind": "InferenceService",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def deployment(
    isvc: dict[str, Any], runtime: dict[str, Any], predictor: dict[str, Any], name: str, replicas: int
) -> dict[str, Any]:
    app = f"isvc.{name}"
    labels = {
        **(predictor.get("labels") or {}),
        "app": app,
        "serving.kserve.io/inferenceservice": isvc["metadata"]["name"],
        "component": "predictor",
    }
    strategy = predictor.get("deploymentStrategy") or {"type": "RollingUpdate"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": isvc["metadata"]["namespace"],
            "labels": labels,
            "ownerReferences": [_owner(isvc)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": labels, "annotations": dict(predictor.get("annotations") or {})},
                "spec": predictor_pod(runtime, predictor),
            },
        },
    }


def _available(dep: dict[str, Any] | None) -> bool:
    st = (dep or {}).get("status") or {}
    return bool(st.get("availableReplicas")) and st.get("observedGeneration") == (dep or {}).get(
        "metadata", {}
    ).get("generation")


class KServeStandIn:
    """Reconciles every InferenceService of one namespace, as KServe's controller would, until stopped."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.api = api
        self.ns = namespace
        self.errors: list[str] = []

    def _get(self, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return self.api.get(api_version, kind, name, self.ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def reconcile(self, isvc: dict[str, Any]) -> None:
        name = isvc["metadata"]["name"]
        spec = isvc["spec"]
        stable = spec["predictor"]
        runtime = self._get(RUNTIME, "ServingRuntime", (stable.get("model") or {}).get("runtime") or "")
        if runtime is None:
            return
        stopped = (isvc["metadata"].get("annotations") or {}).get("serving.kserve.io/stop") == "true"
        canaries = []
        for entry in spec.get("canary") or []:
            predictor = canary_predictor(stable, entry["predictor"])
            dep_name = f"{name}-{entry['predictor']['name']}-predictor"
            replicas = int(entry["predictor"].get("minReplicas") or 1)
            canaries.append((entry, dep_name, replicas))
            self.api.apply(
                deployment(isvc, runtime, predictor, dep_name, 0 if stopped else replicas),
                field_manager=FIELD_MANAGER,
                force=True,
            )
        previous = {c["name"]: c for c in (isvc.get("status") or {}).get("canaryStatuses") or []}
        ready_canary = sum(r for e, _, r in canaries if previous.get(e["predictor"]["name"], {}).get("ready"))
        stable_name = f"{name}-predictor"
        replicas = 0 if stopped else max(int(stable.get("minReplicas") or 1) - ready_canary, 1)
        self.api.apply(
            deployment(isvc, runtime, stable, stable_name, replicas), field_manager=FIELD_MANAGER, force=True
        )
        listed = {dep_name for _, dep_name, _ in canaries} | {stable_name}
        owned = f"serving.kserve.io/inferenceservice={name}"
        for dep in self.api.list("apps/v1", "Deployment", self.ns, owned):
            if dep["metadata"]["name"] not in listed:
                self.api.delete("apps/v1", "Deployment", dep["metadata"]["name"], self.ns)
        stable_dep = self._get("apps/v1", "Deployment", stable_name)
        statuses = [
            {
                "name": e["predictor"]["name"],
                "ready": _available(self._get("apps/v1", "Deployment", dep_name)),
                "trafficPercent": e["trafficPercent"],
            }
            for e, dep_name, _ in canaries
        ]
        ready = "True" if _available(stable_dep) or stopped else "False"
        stamp = "2026-01-01T00:00:00Z"
        conditions = [
            {"type": "PredictorReady", "status": ready, "lastTransitionTime": stamp},
            {"type": "Ready", "status": ready, "lastTransitionTime": stamp},
        ]
        if stopped:
            conditions.append({"type": "Stopped", "status": "True", "lastTransitionTime": stamp})
        if canaries:
            all_ready = "True" if all(s["ready"] for s in statuses) else "False"
            conditions.append(
                {"type": "CanaryPredictorReady", "status": all_ready, "lastTransitionTime": stamp}
            )
        status: dict[str, Any] = {
            "observedGeneration": isvc["metadata"]["generation"],
            "url": f"http://{stable_name}.{self.ns}.svc.cluster.local",
            "conditions": conditions,
            "canaryStatuses": statuses or None,
        }
        if (isvc.get("status") or {}).get("observedGeneration") is not None and _same(isvc["status"], status):
            return
        self.api.request(
            "PATCH",
            f"/apis/{ISVC}/namespaces/{self.ns}/inferenceservices/{name}/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    def sync(self) -> None:
        for isvc in self.api.list(ISVC, "InferenceService", self.ns):
            if not isvc["metadata"].get("deletionTimestamp"):
                self.reconcile(isvc)

    def run(self, stop: threading.Event, every: float = 0.3) -> None:
        while not stop.wait(every):
            try:
                self.sync()
            except Exception as exc:  # an API hiccup or a conflict: next round
                self.errors.append(repr(exc))


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    keep = {k: v for k, v in new.items() if v is not None}
    strip = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in keep["conditions"]]
    have = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in old.get("conditions") or []]
    return (
        old.get("observedGeneration") == keep["observedGeneration"]
        and sorted(map(str, strip)) == sorted(map(str, have))
        and old.get("canaryStatuses") == keep.get("canaryStatuses")
    )
