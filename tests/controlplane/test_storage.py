"""PersistentVolumeClaims bind through the PV controller of kube-controller-manager."""

from __future__ import annotations

import pytest

from harness import KubeApi, TestCluster, pod, wait_for

pytestmark = pytest.mark.cluster


def claim(name: str, size: str = "1Gi") -> dict[str, object]:
    # No storageClassName: the DefaultStorageClass admission plugin fills in the cluster's default.
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }


def consumer(claim_name: str) -> dict[str, object]:
    # A consumer, so classes with volumeBindingMode WaitForFirstConsumer (kind, k3d) bind as well.
    volume = {"name": "data", "persistentVolumeClaim": {"claimName": claim_name}}
    return pod("consumer", volumes=[volume])


def test_claim_of_the_default_class_binds(kube_api: KubeApi, namespace: str) -> None:
    kube_api.create(claim("workspace"), namespace)
    kube_api.create(consumer("workspace"), namespace)

    pvc = wait_for(
        lambda: kube_api.get("v1", "PersistentVolumeClaim", "workspace", namespace),
        lambda c: c["status"].get("phase") == "Bound",
        timeout=60,
        what="PVC workspace to bind",
    )
    assert pvc["spec"]["storageClassName"], "the default StorageClass was applied"
    assert pvc["status"]["capacity"]["storage"] == "1Gi"
    pv = kube_api.get("v1", "PersistentVolume", pvc["spec"]["volumeName"])
    assert pv["spec"]["claimRef"]["name"] == "workspace" and pv["status"]["phase"] == "Bound"


@pytest.mark.kwok
def test_embedded_cluster_provisions_host_path_volumes_for_running_pods(
    kube_api: KubeApi, namespace: str, cluster: TestCluster
) -> None:
    kube_api.create(claim("cache", "5Gi"), namespace)
    kube_api.create(consumer("cache"), namespace)

    pvc = wait_for(
        lambda: kube_api.get("v1", "PersistentVolumeClaim", "cache", namespace),
        lambda c: c["status"].get("phase") == "Bound",
        what="PVC cache to bind",
    )
    assert pvc["spec"]["storageClassName"] == "standard"
    pv = kube_api.get("v1", "PersistentVolume", pvc["spec"]["volumeName"])
    assert pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == "kubernetes.io/host-path"
    assert pv["spec"]["capacity"]["storage"] == "5Gi"
    # The scheduler's VolumeBinding plugin admits the pod only with its claim bound.
    wait_for(
        lambda: kube_api.get("v1", "Pod", "consumer", namespace),
        lambda p: p["status"].get("phase") == "Running",
        what="the pod using the claim to run",
    )
