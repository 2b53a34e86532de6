"""Embedded Kubernetes control plane for tests and the demo (see docs/control-plane.md).

`python -m kubecluster up|down|env|status --state-dir DIR` from the command line; from Python:

    cluster = EmbeddedCluster(state_dir)
    cluster.start()          # etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok
    ...                      # KUBECONFIG=cluster.kubeconfig
    cluster.stop()
"""

from .binaries import BinariesNotFound, find_binaries
from .cluster import ClusterConfig, ClusterState, EmbeddedCluster, StartupError
from .kubeconfig import new_api_client
from .manifests import apply, apply_objects, install_crds, load_manifests, wait_crds_established
from .nodes import GPU_RESOURCE, SIMULATED_LABEL
from .wait import WaitTimeout, wait_for

__all__ = [
    "GPU_RESOURCE",
    "SIMULATED_LABEL",
    "BinariesNotFound",
    "ClusterConfig",
    "ClusterState",
    "EmbeddedCluster",
    "StartupError",
    "WaitTimeout",
    "apply",
    "apply_objects",
    "find_binaries",
    "install_crds",
    "load_manifests",
    "new_api_client",
    "wait_crds_established",
    "wait_for",
]
