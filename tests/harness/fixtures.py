"""pytest plugin: markers and fixtures for tests that need a Kubernetes cluster.

- Any test that uses the `cluster` fixture (directly or through another fixture) is marked `cluster`,
  so `-m "not cluster"` runs the unit tests without starting anything.
- `kwok` marks tests that rely on the simulated nodes (pod outcome markers, loopback pod IPs, GPU nodes);
  on a cluster without them (SPECULATORS_TEST_KUBECONFIG=kind/k3d/OpenShift) they are skipped with a reason.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubecluster import install_crds as _install_crds
from kubecluster import load_manifests
from kubecluster.wait import wait_for as _wait_for

from .kube import TEST_FIELD_MANAGER, KubeApi
from .operator import OperatorRunners
from .session import TestCluster, session_cluster

THIRD_PARTY_CRDS = Path(__file__).resolve().parents[1] / "third_party_crds"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
TEST_NS_LABEL = "speculators.ai/test-namespace"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kwok: needs the embedded control plane's simulated kwok nodes (pod outcome markers, loopback pod "
        "IPs); skipped with a reason on a real cluster",
    )


@pytest.hookimpl(tryfirst=True)  # before -m deselects, so `-m "not cluster"` sees the added marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixturenames = getattr(item, "fixturenames", ())
        if ("cluster" in fixturenames or item.get_closest_marker("kwok")) and not item.get_closest_marker(
            "cluster"
        ):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster() -> Iterator[TestCluster]:
    """The session's cluster: embedded (started once, stopped at the end) or SPECULATORS_TEST_KUBECONFIG's."""
    with session_cluster() as c:
        yield c


@pytest.fixture(autouse=True)
def _kwok_only(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("kwok"):
        c: TestCluster = request.getfixturevalue("cluster")
        if not c.simulated:
            pytest.skip(
                f"needs kwok nodes with sim.speculators.ai markers; {c.server} has none "
                "(real pods run there: this behaviour is only simulated on the embedded control plane)"
            )


@pytest.fixture(scope="session")
def kube_api(cluster: TestCluster) -> Iterator[KubeApi]:
    api = KubeApi.from_kubeconfig(cluster.kubeconfig)
    yield api
    api.close()


def _namespace(request: pytest.FixtureRequest, kube_api: KubeApi, labels: dict[str, str]) -> Iterator[str]:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{slug}-{secrets.token_hex(3)}"
    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {**labels, TEST_NS_LABEL: "true"}},
        }
    )
    # The ServiceAccount admission plugin rejects pods until kcm has created the namespace's `default` SA.
    _wait_for(
        lambda: [
            sa for sa in kube_api.list("v1", "ServiceAccount", name) if sa["metadata"]["name"] == "default"
        ],
        timeout=30,
        what=f"ServiceAccount {name}/default",
    )
    yield name
    kube_api.delete("v1", "Namespace", name)


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube_api: KubeApi) -> Iterator[str]:
    """A fresh namespace enforcing the `restricted` Pod Security Standard (the operator's pods must pass),
    deleted after the test."""
    yield from _namespace(request, kube_api, RESTRICTED)


@pytest.fixture
def unrestricted_namespace(request: pytest.FixtureRequest, kube_api: KubeApi) -> Iterator[str]:
    """A fresh namespace without Pod Security labels (the cluster's default policy applies)."""
    yield from _namespace(request, kube_api, {})


@pytest.fixture(scope="session")
def install_crds(kube_api: KubeApi) -> Callable[..., list[str]]:
    """install_crds(*paths, field_manager=...) server-side applies the CRDs (forcing ownership: tests may
    re-install what another test installed) and waits until they are Established. CRDs are cluster-scoped
    and stay installed for the session."""

    def install(*paths: Path | str, field_manager: str = TEST_FIELD_MANAGER) -> list[str]:
        return _install_crds(kube_api.api, paths, field_manager)

    return install


@pytest.fixture(scope="session")
def third_party_crds(
    cluster: TestCluster, kube_api: KubeApi, install_crds: Callable[..., list[str]]
) -> list[str]:
    """KServe (InferenceService, ServingRuntime, ClusterServingRuntime), Argo CD Application, OpenShift
    Route and ServiceMonitor, from the vendored copies in tests/third_party_crds (see SOURCES.md there).
    Returns the CRD names installed. On an existing cluster, a kind the cluster already serves is left
    alone (OpenShift serves Route itself; a platform's ServiceMonitor CRD must not be replaced)."""
    paths = sorted(THIRD_PARTY_CRDS.glob("*.yaml"))
    if not paths:
        raise FileNotFoundError(f"no CRDs in {THIRD_PARTY_CRDS}")
    if not cluster.embedded:
        paths = [p for p in paths if not _served(kube_api, load_manifests([p])[0])]
    return install_crds(*paths) if paths else []


def _served(kube_api: KubeApi, crd: dict[str, Any]) -> bool:
    spec = crd["spec"]
    return any(
        kube_api.serves(f"{spec['group']}/{v['name']}", spec["names"]["kind"]) for v in spec["versions"]
    )


@pytest.fixture
def kopf_runner(cluster: TestCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., object]]:
    """kopf_runner(argv, env=None, timeout=60) runs `kopf <argv>` in a thread against the test cluster and
    returns the KopfRunner; every runner is stopped after the test and its exceptions re-raised."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    # Kopf logs in through the kubernetes client, whose default kubeconfig path was read from $KUBECONFIG
    # when it was first imported (before this fixture ran): point it at the test cluster too.
    from kubernetes.config import kube_config

    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(cluster.kubeconfig))
    runners = OperatorRunners(cluster.kubeconfig)
    yield runners.start
    runners.stop_all()


@pytest.fixture
def wait_for() -> Callable[..., object]:
    """kubecluster.wait_for: poll fetch() until until(value) holds; the timeout names the last state."""
    return _wait_for
