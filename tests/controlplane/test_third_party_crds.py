"""The vendored third-party CRDs install with server-side apply and the apiserver enforces their schemas
(KServe's InferenceService CRD is ~2 MB: client-side apply could not store it)."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import UnprocessableEntityException

from harness import KubeApi, TestCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

EXPECTED = {
    "inferenceservices.serving.kserve.io": ("serving.kserve.io/v1beta1", "InferenceService"),
    "servingruntimes.serving.kserve.io": ("serving.kserve.io/v1alpha1", "ServingRuntime"),
    "llminferenceservices.serving.kserve.io": ("serving.kserve.io/v1alpha2", "LLMInferenceService"),
    "trainjobs.trainer.kubeflow.org": ("trainer.kubeflow.org/v1alpha1", "TrainJob"),
    "clustertrainingruntimes.trainer.kubeflow.org": (
        "trainer.kubeflow.org/v1alpha1",
        "ClusterTrainingRuntime",
    ),
    "clusterservingruntimes.serving.kserve.io": ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"),
    "applications.argoproj.io": ("argoproj.io/v1alpha1", "Application"),
    "routes.route.openshift.io": ("route.openshift.io/v1", "Route"),
    "servicemonitors.monitoring.coreos.com": ("monitoring.coreos.com/v1", "ServiceMonitor"),
}


def message(exc: UnprocessableEntityException) -> str:
    return str(json.loads(exc.body)["message"])


def isvc(name: str, spec: dict[str, object]) -> dict[str, object]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_third_party_crds_are_established_and_served(
    kube_api: KubeApi, cluster: TestCluster, third_party_crds: list[str]
) -> None:
    if cluster.embedded:
        assert set(third_party_crds) == set(EXPECTED)
    for name in third_party_crds:
        crd = kube_api.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name)
        established = {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"]
        assert established == "True", name
    for api_version, kind in EXPECTED.values():
        assert kube_api.serves(api_version, kind), f"{kind} ({api_version}) is not served"
    assert kube_api.list("serving.kserve.io/v1beta1", "InferenceService", "default") is not None


def test_invalid_inference_service_is_rejected_by_the_kserve_schema(
    kube_api: KubeApi, namespace: str, third_party_crds: list[str]
) -> None:
    with pytest.raises(UnprocessableEntityException) as err:
        kube_api.create(isvc("nopredictor", {}), namespace)
    assert 'InferenceService.serving.kserve.io "nopredictor" is invalid' in message(err.value)
    assert "spec.predictor: Required value" in message(err.value)

    with pytest.raises(UnprocessableEntityException) as err:
        kube_api.create(
            isvc("badmetric", {"predictor": {"scaleMetric": "gpu", "minReplicas": "one"}}), namespace
        )
    msg = message(err.value)
    assert 'spec.predictor.scaleMetric: Unsupported value: "gpu"' in msg
    type_error = 'spec.predictor.minReplicas: Invalid value: "string": spec.predictor.minReplicas in body'
    assert f"{type_error} must be of type integer" in msg

    valid = isvc(
        "ok", {"predictor": {"model": {"modelFormat": {"name": "huggingface"}, "runtime": "ok-vllm"}}}
    )
    assert (
        kube_api.create(valid, namespace, dry_run=True)["spec"]["predictor"]["model"]["runtime"] == "ok-vllm"
    )


def test_route_cel_rules_are_enforced(kube_api: KubeApi, namespace: str, third_party_crds: list[str]) -> None:
    route = {
        "apiVersion": "route.openshift.io/v1",
        "kind": "Route",
        "metadata": {"name": "both-certs"},
        "spec": {
            "to": {"kind": "Service", "name": "svc"},
            "tls": {"termination": "edge", "certificate": "PEM", "externalCertificate": {"name": "secret"}},
        },
    }
    with pytest.raises(UnprocessableEntityException) as err:
        kube_api.create(route, namespace)
    assert "cannot have both spec.tls.certificate and spec.tls.externalCertificate" in message(err.value)
