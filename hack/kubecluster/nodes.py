"""The simulated parts of the embedded cluster: kwok GPU nodes and the default StorageClass."""

from __future__ import annotations

from typing import Any

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
SIMULATED_LABEL = "sim.speculators.ai/simulated"
STORAGE_CLASS = "standard"


def gpu_node(name: str, gpus: int = 8, cpu: str = "64", memory: str = "512Gi") -> dict[str, Any]:
    """A Node that kwok manages. No taint: unmodified pod templates schedule onto it, as on a GPU cluster
    where the device plugin advertises nvidia.com/gpu."""
    resources = {
        "cpu": cpu,
        "memory": memory,
        "ephemeral-storage": "2Ti",
        "pods": "110",
        GPU_RESOURCE: str(gpus),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": f"sim-gpu-{gpus}x",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.count": str(gpus),
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                "nvidia.com/gpu.memory": "81559",
                SIMULATED_LABEL: "true",
                "type": "kwok",
            },
        },
        "spec": {},
        "status": {"allocatable": dict(resources), "capacity": dict(resources)},
    }


def default_storage_class() -> dict[str, Any]:
    """kube-controller-manager's in-tree host-path provisioner (--enable-hostpath-provisioner) creates and
    binds a PV for each claim: real dynamic provisioning through the PV controller, with a directory under
    /tmp/hostpath_pv that nothing mounts (kwok runs no containers)."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "kubernetes.io/host-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def simulated_objects(node_count: int, gpus_per_node: int) -> list[dict[str, Any]]:
    nodes = [gpu_node(f"kwok-gpu-{i}", gpus_per_node) for i in range(node_count)]
    return [*nodes, default_storage_class()]
