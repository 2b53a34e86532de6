"""The Helm charts without a cluster: lint, generated parts in sync with their sources, values schema,
and what the templates render (images from version.py, restricted pods, RBAC = rbac.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import prometheus_client
import pytest
import yaml
from release import files, helm
from release.argocd import health_scripts
from release.chart import KEEP, OWNED_DIRS, chart_files
from release.rbac import CLUSTER_SCOPED, as_triples
from shiplib import CHART, CRD_CHART, CRDS, FULL_VALUES, REPO, by_kind, one, render

from speculators_core import version
from speculators_operator import opmetrics, rbac


def test_generated_chart_files_are_in_sync_with_their_sources() -> None:
    stale = files.drift(chart_files(), owned_dirs=OWNED_DIRS)
    assert not stale, f"run `make chart`: {[str(p.relative_to(REPO)) for p in stale]}"


@pytest.mark.parametrize("chart", [CHART, CRD_CHART], ids=lambda p: p.name)
def test_helm_lint_strict(chart: Any) -> None:
    proc = helm.run("lint", "--strict", str(chart), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_helm_lint_strict_with_every_option_on(tmp_path: Any) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(FULL_VALUES))
    proc = helm.run("lint", "--strict", str(CHART), "--values", str(values), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_versions_and_images_come_from_version_py() -> None:
    for chart in (CHART, CRD_CHART):
        meta = yaml.safe_load((chart / "Chart.yaml").read_text())
        assert meta["version"] == meta["appVersion"] == version.__version__
    deployment = one(render(), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == version.OPERATOR_IMAGE
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SPECULATORS_RUNTIME_IMAGE"] == version.RUNTIME_IMAGE
    assert env["SPECULATORS_VLLM_IMAGE"] == version.VLLM_IMAGE


def test_crd_chart_ships_exactly_crds_with_the_keep_policy() -> None:
    rendered = render(chart=CRD_CHART)
    assert {o["metadata"]["name"] for o in rendered} == {
        yaml.safe_load(p.read_text())["metadata"]["name"] for p in CRDS.glob("*.yaml")
    }
    for path in CRDS.glob("*.yaml"):
        source = yaml.safe_load(path.read_text())
        shipped = one(rendered, "CustomResourceDefinition", source["metadata"]["name"])
        assert shipped["metadata"]["annotations"].pop(KEEP) == "keep"
        if not shipped["metadata"]["annotations"]:
            del shipped["metadata"]["annotations"]
        assert shipped == source, path.name


def test_operator_chart_ships_no_crds_directory() -> None:
    """Helm installs crds/ once and never upgrades it: CRDs live in the CRD chart instead."""
    assert not (CHART / "crds").exists()
    assert not (CRD_CHART / "crds").exists()


def test_cluster_role_grants_exactly_what_rbac_py_declares() -> None:
    role = one(render(), "ClusterRole", "spd-speculators-operator")
    assert as_triples(role["rules"]) == as_triples(rbac.cluster_role()["rules"])
    granted = as_triples(role["rules"])
    # OpenShift's OwnerReferencesPermissionEnforcement: blockOwnerDeletion needs update on */finalizers.
    assert ("speculators.ai", "speculators/finalizers", "update") in granted
    assert ("speculators.ai", "speculatortrainings/finalizers", "update") in granted
    assert not any(r == "secrets" for _, r, _ in granted), "the operator never reads Secrets"
    assert not any(v == "*" or r == "*" for _, r, v in granted)
    binding = one(render(), "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "spd-speculators-operator", "namespace": "speculators-system"}
    ]


def test_watch_namespaces_moves_namespaced_rules_into_roles() -> None:
    objects = render({"watchNamespaces": ["team-a", "team-b"]})
    cluster = as_triples(one(objects, "ClusterRole", "spd-speculators-operator")["rules"])
    assert {r.split("/")[0] for _, r, _ in cluster} <= CLUSTER_SCOPED
    roles = by_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert as_triples(role["rules"]) | cluster == as_triples(rbac.cluster_role()["rules"])
    bindings = by_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args


def test_peering_adds_its_rules_and_objects() -> None:
    objects = render({"replicaCount": 2, "peering": {"enabled": True, "name": "p"}})
    granted = as_triples(one(objects, "ClusterRole", "spd-speculators-operator")["rules"])
    assert as_triples(rbac.cluster_role(peering=True)["rules"]) == granted
    assert one(objects, "ClusterKopfPeering")["metadata"]["name"] == "p"
    args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=p" in args
    # Identical replicas draw distinct priorities (equal ones would make Kopf pause them all).
    assert "--priority=random" in args and "--peering-lifetime=60" in args
    args = one(render({"peering": {"enabled": True, "lifetimeSeconds": 20}}), "Deployment")["spec"][
        "template"
    ]
    assert "--peering-lifetime=20" in args["spec"]["containers"][0]["args"]
    assert not by_kind(render(), "ClusterKopfPeering")


def test_operator_pod_is_restricted() -> None:
    pod = one(render(FULL_VALUES), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert "runAsUser" not in sc and "runAsUser" not in pod["securityContext"]
    assert all("hostPath" not in v for v in pod["volumes"])
    assert {"startupProbe", "livenessProbe", "readinessProbe", "resources"} <= container.keys()
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_recreate_strategy_never_runs_two_standalone_operators() -> None:
    deployment = one(render(), "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    proc = helm.run(
        "template", "x", str(CHART), "--kube-version", "1.35.0", "--set", "replicaCount=2", check=False
    )
    assert proc.returncode != 0 and "peering.enabled" in proc.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"bogus": 1}, "additional properties 'bogus'"),
        ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
        ({"metrics": {"prometheusRule": {"lowAcceptanceRate": 2}}}, "lowAcceptanceRate"),
        ({"logLevel": "chatty"}, "/logLevel"),
    ],
)
def test_values_schema_rejects_bad_values(values: dict[str, Any], message: str, tmp_path: Any) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    proc = helm.run(
        "template", "x", str(CHART), "--kube-version", "1.35.0", "--values", str(path), check=False
    )
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_every_value_is_described_by_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict[str, Any], value: Any, path: str) -> None:
        assert node.get("description") or path == "", f"{path}: no description"
        if isinstance(value, dict) and node.get("properties"):
            for key, sub in value.items():
                assert key in node["properties"], f"{path}.{key}: not in values.schema.json"
                walk(node["properties"][key], sub, f"{path}.{key}")

    walk(schema, values, "")


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(speculators_[a-z_]+?)(?:_bucket|_total)?\b", expr))


def _registered() -> set[str]:
    names: set[str] = set()
    for collector in list(prometheus_client.REGISTRY._collector_to_names):
        for metric in collector.describe() if hasattr(collector, "describe") else []:
            names.add(metric.name)
    assert opmetrics.RECONCILES  # the operator's metrics module is loaded
    return names


def test_dashboard_and_alerts_query_metrics_the_operator_exports() -> None:
    registered = _registered()
    dashboard = json.loads((CHART / "dashboards" / "speculators.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    rule = one(render(FULL_VALUES), "PrometheusRule")
    exprs += [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    used = set().union(*(_metric_names(e) for e in exprs))
    assert used, exprs
    assert used <= registered, f"not exported by speculators_operator.opmetrics: {sorted(used - registered)}"
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Acceptance rate", "Mean acceptance length", "Training progress"} <= titles
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_grafana_dashboard_configmap_carries_the_json() -> None:
    cm = one(render(FULL_VALUES), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["speculators.json"]) == json.loads(
        (CHART / "dashboards" / "speculators.json").read_text()
    )


def test_servicemonitor_keeps_the_speculators_namespace_label() -> None:
    monitor = one(render(FULL_VALUES), "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True and endpoint["port"] == "metrics"
    service = one(render(FULL_VALUES), "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_optional_parts_are_off_by_default() -> None:
    kinds = {o["kind"] for o in render()}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "ConfigMap", "ClusterKopfPeering", "Role"}
    assert {
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "NetworkPolicy",
    } <= kinds


def test_argocd_cm_snippet_carries_the_health_scripts_verbatim() -> None:
    cm = yaml.safe_load((CHART / "argocd" / "argocd-cm.yaml").read_text())
    assert cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"] == {key: path.read_text() for key, path in health_scripts().items()}


def test_the_charts_cluster_training_runtime_is_the_one_the_operator_targets() -> None:
    """kubeflowTrainer.clusterTrainingRuntime renders render.trainjob.cluster_training_runtime (the object
    tests/operator/test_cluster_trainjob.py runs TrainJobs on), with the chart's runtime image."""
    from speculators_operator.render.trainjob import cluster_training_runtime

    assert not by_kind(render(), "ClusterTrainingRuntime")  # off by default: Trainer's CRDs may be absent
    objects = render(FULL_VALUES)
    runtime = one(objects, "ClusterTrainingRuntime", "speculators-torchrun")
    deployment = one(objects, "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    image = env["SPECULATORS_RUNTIME_IMAGE"]
    expected = cluster_training_runtime("speculators-torchrun", image, "IfNotPresent")
    assert runtime["spec"] == expected["spec"]
    assert runtime["metadata"]["labels"]["trainer.kubeflow.org/framework"] == "torch"
