"""The charts against the real API server of the embedded control plane.

- `helm template` output (every option on) passes server-side dry-run with the third-party CRDs
  (ServiceMonitor, PrometheusRule) and ours installed; the operator pod passes Pod Security "restricted".
- `helm install` of the chart, then the real operator, started with the chart Deployment's own arguments
  and environment and authenticated as the chart's ServiceAccount (a token of exactly that account; the
  API server enforces OwnerReferencesPermissionEnforcement as OpenShift does), runs
  a Speculator (resolve Job, Deployment, Service, Ready through kwok pods) and a SpeculatorTraining to the
  end: a permission missing from the chart fails the test.
- The CRD chart's upgrade path: `helm upgrade` changes the CRDs in place; `helm uninstall` keeps them.
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_process import operator_from_chart
from release import helm
from shiplib import CRD_CHART, FULL_VALUES, install_ship_crds, one, render

pytestmark = pytest.mark.slow


@pytest.fixture
def ship_crds(install_crds: Any, third_party_crds: list[str]) -> list[str]:
    return install_ship_crds(install_crds, third_party_crds)


API = "speculators.ai/v1alpha1"
INSPECT = {"algorithm": "eagle3", "method": "eagle3", "speculative_tokens": 3, "verifier": "x", "params": 1}


def _namespaced(kube_api: Any, obj: dict[str, Any]) -> bool:
    return kube_api._mapper.resource(obj["apiVersion"], obj["kind"]).namespaced


def test_rendered_chart_passes_server_side_dry_run(
    kube_api: Any, ship_crds: list[str], namespace: str
) -> None:
    for values in (FULL_VALUES, {**FULL_VALUES, "watchNamespaces": [namespace]}, {}):
        release = f"dry-{secrets.token_hex(3)}"
        objects = render(values, release=release, namespace=namespace)
        for obj in objects:
            kube_api.create(obj, namespace if _namespaced(kube_api, obj) else None, dry_run=True)
        deployment = one(objects, "Deployment")
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{release}-pod"}}
        pod["spec"] = dict(deployment["spec"]["template"]["spec"], serviceAccountName="default")
        kube_api.create(pod, namespace, dry_run=True)  # Pod Security "restricted" is enforced here


def _speculator(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Speculator",
        "metadata": {"name": name},
        "spec": {
            "verifier": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
            "draft": {"uri": "hf://RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3"},
            **spec,
        },
    }


EVAL_SUMMARY = {"step": "eval", "k": 3, "mean_accept_len": 2.4, "per_pos": [0.75, 0.45, 0.2], "speedup": 1.9}


def _training(name: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "SpeculatorTraining",
        "metadata": {"name": name},
        "spec": {
            "verifier": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
            "data": {"datasets": [{"uri": "hf://HuggingFaceH4/ultrachat_200k", "split": "train_sft"}]},
            "training": {"mode": "online"},
            "output": {"pvc": {"size": "1Gi"}},
            "deploy": {"replicas": 1},
            # kwok completes every pod at once; an eval summary with numbers lets the promotion gate pass.
            "podMetadata": {
                "annotations": {"sim.speculators.ai/termination-message": json.dumps(EVAL_SUMMARY)}
            },
        },
    }


def _status(kube_api: Any, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return kube_api.get(API, kind, name, namespace).get("status") or {}


def _ready(status: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])


def test_operator_runs_with_exactly_the_charts_permissions(
    cluster: Any, kube_api: Any, ship_crds: list[str], namespace: str, wait_for: Any, tmp_path: Path
) -> None:
    with operator_from_chart(cluster, kube_api, namespace, tmp_path, wait_for):
        resolve = {"annotations": {"sim.speculators.ai/termination-message": json.dumps(INSPECT)}}
        kube_api.create(_speculator("served", method="eagle3", numSpeculativeTokens=3), namespace)
        kube_api.create(_speculator("resolved", podMetadata=resolve), namespace)
        kube_api.create(_training("trained"), namespace)

        for name in ("served", "resolved"):
            status = wait_for(
                lambda n=name: _status(kube_api, "Speculator", n, namespace),
                _ready,
                timeout=120,
                what=f"Speculator {name} Ready",
            )
            assert status["phase"] == "Running"
            assert kube_api.get("apps/v1", "Deployment", f"{name}-vllm", namespace)
            assert kube_api.get("v1", "Service", name, namespace)
        assert _status(kube_api, "Speculator", "resolved", namespace)["draft"]["numSpeculativeTokens"] == 3
        status = wait_for(
            lambda: _status(kube_api, "SpeculatorTraining", "trained", namespace),
            _ready,
            timeout=180,
            what="SpeculatorTraining trained Ready (trained and deployed)",
        )
        assert status["phase"] == "Succeeded" and status["speculatorRef"] == {"name": "trained"}


def test_crd_chart_upgrades_crds_in_place_and_keeps_them_on_uninstall(
    cluster: Any, kube_api: Any, ship_crds: list[str], namespace: str, tmp_path: Path
) -> None:
    """Why the CRDs are templates of their own chart: `helm upgrade` applies them (files in crds/ are
    installed once and never upgraded), and resource-policy keep protects every resource on uninstall."""
    release = f"crds-{secrets.token_hex(3)}"
    old = tmp_path / "speculators-operator-crds"
    shutil.copytree(CRD_CHART, old)
    chart_yaml = yaml.safe_load((old / "Chart.yaml").read_text())
    (old / "Chart.yaml").write_text(yaml.safe_dump({**chart_yaml, "version": "0.0.1"}))
    crd_file = old / "templates" / "speculators.ai_speculators.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = "an older release of the CRD"
    crd_file.write_text(yaml.safe_dump(crd, sort_keys=False))

    def description() -> str:
        live = kube_api.get(
            "apiextensions.k8s.io/v1", "CustomResourceDefinition", "speculators.speculators.ai"
        )
        return live["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"]

    # The session installed the CRDs already (as a cluster admin might have): the chart adopts them.
    helm.run("install", release, str(old), "-n", namespace, "--take-ownership", kubeconfig=cluster.kubeconfig)
    assert description() == "an older release of the CRD"
    helm.run("upgrade", release, str(CRD_CHART), "-n", namespace, kubeconfig=cluster.kubeconfig)
    assert description() == crd_description(CRD_CHART)
    live = kube_api.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "speculators.speculators.ai")
    assert live["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    helm.run("uninstall", release, "-n", namespace, "--wait", kubeconfig=cluster.kubeconfig)
    for name in ("speculators.speculators.ai", "speculatortrainings.speculators.ai"):
        assert kube_api.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name)


def crd_description(chart: Path) -> str:
    crd = yaml.safe_load((chart / "templates" / "speculators.ai_speculators.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"]
