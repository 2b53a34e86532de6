"""The cluster a test session runs against: the embedded control plane, or the one that
SPECULATORS_TEST_KUBECONFIG names (kind, k3d, OpenShift, or a `python -m kubecluster up` cluster)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kubecluster import (
    SIMULATED_LABEL,
    ClusterConfig,
    ClusterState,
    EmbeddedCluster,
    find_binaries,
    new_api_client,
)
from kubecluster.manifests import request

ENV_KUBECONFIG = "SPECULATORS_TEST_KUBECONFIG"
ENV_KEEP_STATE = "SPECULATORS_TEST_KEEP_STATE"
ENV_POD_CIDR = "SPECULATORS_TEST_POD_CIDR"


@dataclass(frozen=True)
class TestCluster:
    kubeconfig: Path
    server: str
    embedded: bool
    # True when the nodes are kwok's (label sim.speculators.ai/simulated=true): the pod outcome markers
    # work and pod IPs are loopback addresses the test process can serve on.
    simulated: bool
    pod_cidr: str | None = None
    state_dir: Path | None = None
    control: EmbeddedCluster | None = None  # the embedded control plane's processes (restart() for chaos)

    __test__ = False  # not a test class, despite the name


def _is_simulated(kubeconfig: Path) -> bool:
    api = new_api_client(kubeconfig)
    try:
        nodes = request(
            api, "GET", "/api/v1/nodes", query=[("labelSelector", f"{SIMULATED_LABEL}=true")], timeout=15
        )
    finally:
        api.close()
    return bool(nodes["items"])


def _external(path: str) -> TestCluster:
    kubeconfig = Path(path).expanduser().resolve()
    if not kubeconfig.is_file():
        raise FileNotFoundError(f"{ENV_KUBECONFIG}={path}: no such kubeconfig file")
    api = new_api_client(kubeconfig)
    server = str(api.configuration.host)
    try:
        request(api, "GET", "/version", timeout=15)
    except Exception as exc:
        raise RuntimeError(
            f"{ENV_KUBECONFIG}={path}: the cluster at {server} does not answer ({exc})"
        ) from exc
    finally:
        api.close()
    # A `python -m kubecluster up` cluster records its pod CIDR next to its kubeconfig.
    pod_cidr = None
    if (kubeconfig.parent / "cluster.json").is_file():
        pod_cidr = ClusterState.load(kubeconfig.parent).pod_cidr
    return TestCluster(
        kubeconfig, server, embedded=False, simulated=_is_simulated(kubeconfig), pod_cidr=pod_cidr
    )


@contextmanager
def session_cluster() -> Iterator[TestCluster]:
    """Yields the session's cluster; an embedded one is started here and stopped on exit."""
    external = os.environ.get(ENV_KUBECONFIG)
    if external:
        yield _external(external)
        return
    binaries = find_binaries()  # BinariesNotFound names `make control-plane`
    state_dir = Path(tempfile.mkdtemp(prefix="speculators-k8s-"))
    config = ClusterConfig()
    if os.environ.get(ENV_POD_CIDR):
        config.pod_cidr = os.environ[ENV_POD_CIDR]
    cluster = EmbeddedCluster(state_dir, config, binaries)
    ok = False
    try:
        state = cluster.start()
        yield TestCluster(
            cluster.kubeconfig,
            state.server,
            embedded=True,
            simulated=True,
            pod_cidr=state.pod_cidr,
            state_dir=state_dir,
            control=cluster,
        )
        ok = True
    finally:
        cluster.stop()
        if ok and not os.environ.get(ENV_KEEP_STATE):
            shutil.rmtree(state_dir, ignore_errors=True)
