"""The operator works with exactly the permissions speculators_operator.rbac declares (the chart's
ClusterRole): it runs as a ServiceAccount bound to that role; a full flow completes without a Forbidden."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Kube, OperatorProcess
from spd_testlib import EVAL, INSPECT, cond, speculator_body, training_body

from harness.operator_process import service_account_kubeconfig
from speculators_operator.rbac import cluster_role

pytestmark = pytest.mark.kwok


@pytest.fixture
def least_privilege_kubeconfig(cluster: Any, kube_api: Any, namespace: str, tmp_path: Path) -> Iterator[Path]:
    name = f"speculators-operator-{secrets.token_hex(3)}"
    kube_api.create(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "operator"}}, namespace
    )
    kube_api.create(cluster_role(name))
    kube_api.create(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}],
        }
    )
    path = service_account_kubeconfig(
        kube_api, cluster.kubeconfig, namespace, "operator", tmp_path / "operator.kubeconfig"
    )
    yield path
    kube_api.delete("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", name)
    kube_api.delete("rbac.authorization.k8s.io/v1", "ClusterRole", name)


def test_operator_runs_with_the_declared_cluster_role(
    least_privilege_kubeconfig: Path, namespace: str, operator_crds: list[str], k: Kube, tmp_path: Path
) -> None:
    operator = OperatorProcess(least_privilege_kubeconfig, namespace, tmp_path)
    operator.start()
    try:
        k.create(
            training_body(
                "rbac",
                training={"mode": "online", "nodes": 2},
                # kwok completes every pod at once; the eval's numbers let the promotion gate pass.
                podMetadata={"annotations": {"sim.speculators.ai/termination-message": json.dumps(EVAL)}},
                deploy={"replicas": 1},
            )
        )
        k.create(
            speculator_body(
                "rbac-hub",
                podMetadata={"annotations": {"sim.speculators.ai/termination-message": json.dumps(INSPECT)}},
            )
        )
        status = k.wait_phase("SpeculatorTraining", "rbac", "Succeeded", timeout=90)
        assert k.get("Service", "rbac-train") is not None  # multi-node: the headless Service
        k.wait_phase("Speculator", "rbac", "Running", timeout=90)
        k.wait_phase("Speculator", "rbac-hub", "Running", timeout=90)
        status = k.wait_status(
            "SpeculatorTraining", "rbac", lambda s: cond(s, "Ready")["status"] == "True", "Ready"
        )
        assert status["speculatorRef"] == {"name": "rbac"}
        assert any(e["reason"] == "Succeeded" for e in k.events("rbac"))
    finally:
        operator.stop()
    log = operator.log_path.read_text()
    assert "Forbidden" not in log and " 403" not in log, operator.tail(60)
