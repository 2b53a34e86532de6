"""The OLM bundle: generated from the chart and crds/ (drift), structurally complete for OLM and the
OpenShift console, and its examples and Deployment accepted by the real API server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from release import files
from release.bundle import CSV_NAME, OLM_VALUES, OWNED_DIRS, PACKAGE, bundle_files
from release.rbac import as_triples
from shiplib import BUNDLE, CRDS, REPO, one, render

from speculators_core import version
from speculators_operator import rbac

MANIFESTS = BUNDLE / "manifests"
CSV_PATH = MANIFESTS / f"{PACKAGE}.clusterserviceversion.yaml"


@pytest.fixture(scope="module")
def csv() -> dict[str, Any]:
    return yaml.safe_load(CSV_PATH.read_text())


def _crds() -> dict[str, dict[str, Any]]:
    out = {}
    for path in MANIFESTS.glob("*.yaml"):
        obj = yaml.safe_load(path.read_text())
        if obj["kind"] == "CustomResourceDefinition":
            out[obj["metadata"]["name"]] = obj
    return out


def test_bundle_is_in_sync_with_its_sources() -> None:
    stale = files.drift(bundle_files(), owned_dirs=OWNED_DIRS)
    assert not stale, f"run `make bundle`: {[str(p.relative_to(REPO)) for p in stale]}"


def test_bundle_crds_are_exactly_the_generated_crds() -> None:
    for name in ("speculators.ai_speculators.yaml", "speculators.ai_speculatortrainings.yaml"):
        assert (MANIFESTS / name).read_text() == (CRDS / name).read_text()


def test_csv_identity_and_version(csv: dict[str, Any]) -> None:
    assert csv["apiVersion"] == "operators.coreos.com/v1alpha1"
    assert csv["metadata"]["name"] == CSV_NAME == f"{PACKAGE}.v{version.__version__}"
    assert csv["spec"]["version"] == version.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", csv["spec"]["minKubeVersion"])
    for key in ("displayName", "description", "provider", "maintainers", "links", "keywords", "maturity"):
        assert csv["spec"][key], key


def test_install_modes(csv: dict[str, Any]) -> None:
    modes = {m["type"]: m["supported"] for m in csv["spec"]["installModes"]}
    assert set(modes) == {"OwnNamespace", "SingleNamespace", "MultiNamespace", "AllNamespaces"}
    assert modes["AllNamespaces"] is True


def test_openshift_feature_annotations(csv: dict[str, Any]) -> None:
    ann = csv["metadata"]["annotations"]
    features = {
        k.rsplit("/", 1)[1]: v for k, v in ann.items() if k.startswith("features.operators.openshift.io/")
    }
    required = {"disconnected", "fips-compliant", "proxy-aware", "tls-profiles", "token-auth-aws"}
    required |= {"token-auth-azure", "token-auth-gcp"}
    assert required <= features.keys()
    assert set(features.values()) <= {"true", "false"}
    assert ann["containerImage"] == version.OPERATOR_IMAGE
    assert ann["capabilities"] and ann["categories"]


def test_owned_crds_match_the_bundled_crds_with_descriptors(csv: dict[str, Any]) -> None:
    owned = csv["spec"]["customresourcedefinitions"]["owned"]
    crds = _crds()
    assert {o["name"] for o in owned} == set(crds)
    for entry in owned:
        crd = crds[entry["name"]]
        assert entry["kind"] == crd["spec"]["names"]["kind"]
        served = {v["name"]: v for v in crd["spec"]["versions"] if v["served"]}
        assert entry["version"] in served
        schema = served[entry["version"]]["schema"]["openAPIV3Schema"]
        assert entry["specDescriptors"] and entry["statusDescriptors"]
        for root, key in (("spec", "specDescriptors"), ("status", "statusDescriptors")):
            for d in entry[key]:
                node = schema["properties"][root]
                for part in d["path"].split("."):
                    node = node["properties"][part]  # KeyError: a descriptor path not in the schema
                assert d["x-descriptors"] and all(
                    x.startswith("urn:alm:descriptor:") for x in d["x-descriptors"]
                )
                assert d["displayName"] and d["description"]
        paths = {d["path"] for d in entry["statusDescriptors"]}
        assert {"phase", "conditions"} <= paths


def test_alm_examples_are_the_repository_examples(csv: dict[str, Any]) -> None:
    examples = json.loads(csv["metadata"]["annotations"]["alm-examples"])
    kinds = {o["kind"] for o in csv["spec"]["customresourcedefinitions"]["owned"]}
    assert {e["kind"] for e in examples} == kinds
    on_disk = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "examples").glob("*.yaml"))]
    assert examples == [e for e in on_disk if e["apiVersion"].startswith("speculators.ai/")]


def test_deployment_and_permissions_come_from_the_chart(csv: dict[str, Any]) -> None:
    install = csv["spec"]["install"]
    assert install["strategy"] == "deployment"
    (deployment,) = install["spec"]["deployments"]
    chart_deployment = one(render(OLM_VALUES, release=PACKAGE), "Deployment")
    assert deployment["spec"]["template"]["spec"] == chart_deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["strategy"] == chart_deployment["spec"]["strategy"]
    assert "helm.sh/chart" not in deployment["label"]
    (perm,) = install["spec"]["clusterPermissions"]
    assert perm["serviceAccountName"] == deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert as_triples(perm["rules"]) == as_triples(rbac.cluster_role()["rules"])
    assert "permissions" not in install["spec"]


def test_related_images_cover_every_image_the_operator_uses(csv: dict[str, Any]) -> None:
    related = {r["image"] for r in csv["spec"]["relatedImages"]}
    assert related == {version.OPERATOR_IMAGE, version.RUNTIME_IMAGE, version.VLLM_IMAGE}
    (deployment,) = csv["spec"]["install"]["spec"]["deployments"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    used = {container["image"]} | {e["value"] for e in container["env"] if e["name"].endswith("_IMAGE")}
    assert used <= related, "a disconnected mirror needs every image in relatedImages"


def test_metadata_annotations_and_bundle_dockerfile_agree() -> None:
    annotations = yaml.safe_load((BUNDLE / "metadata" / "annotations.yaml").read_text())["annotations"]
    assert annotations["operators.operatorframework.io.bundle.mediatype.v1"] == "registry+v1"
    assert annotations["operators.operatorframework.io.bundle.package.v1"] == PACKAGE
    assert annotations["operators.operatorframework.io.bundle.manifests.v1"] == "manifests/"
    assert annotations["operators.operatorframework.io.bundle.metadata.v1"] == "metadata/"
    default = annotations["operators.operatorframework.io.bundle.channel.default.v1"]
    assert default in annotations["operators.operatorframework.io.bundle.channels.v1"].split(",")
    dockerfile = (BUNDLE / "bundle.Dockerfile").read_text()
    labels = dict(re.findall(r"^LABEL (\S+)=(\S+)$", dockerfile, re.MULTILINE))
    assert labels == annotations
    for src in re.findall(r"^COPY (\S+) ", dockerfile, re.MULTILINE):
        assert (BUNDLE / src).is_dir(), src


def test_bundle_manifests_are_kinds_olm_accepts() -> None:
    # registry+v1 bundles may carry these kinds besides the CSV and CRDs (operator-framework/api).
    allowed = {"ClusterServiceVersion", "CustomResourceDefinition", "Service", "ClusterRole", "ConfigMap"}
    allowed |= {"Secret", "ServiceAccount", "PrometheusRule", "ServiceMonitor", "Role", "RoleBinding"}
    for path in MANIFESTS.glob("*"):
        obj = yaml.safe_load(path.read_text())
        assert obj["kind"] in allowed, path.name
        assert "namespace" not in obj["metadata"], f"{path.name}: OLM picks the namespace"


@pytest.mark.slow
def test_alm_examples_and_the_csv_deployment_pass_the_api_server(
    csv: dict[str, Any], kube_api: Any, install_crds: Any, namespace: str
) -> None:
    """Every alm-example validates against the bundled CRDs; the operator Deployment OLM would create
    passes Pod Security "restricted" (server-side dry-run in a namespace that enforces it)."""
    install_crds(*sorted(MANIFESTS.glob("speculators.ai_*.yaml")))
    for example in json.loads(csv["metadata"]["annotations"]["alm-examples"]):
        kube_api.create(example, namespace, dry_run=True)
    (spec,) = csv["spec"]["install"]["spec"]["deployments"]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": spec["name"], "labels": spec["label"]},
        "spec": spec["spec"],
    }
    kube_api.create(deployment, namespace, dry_run=True)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "olm-operator-pod"}}
    pod["spec"] = dict(spec["spec"]["template"]["spec"], serviceAccountName="default")
    kube_api.create(pod, namespace, dry_run=True)  # Pod Security admission judges pods, not Deployments


def test_bundle_paths_exist() -> None:
    for path in (BUNDLE / "bundle.Dockerfile", BUNDLE / "metadata" / "annotations.yaml", CSV_PATH):
        assert Path(path).is_file(), path
