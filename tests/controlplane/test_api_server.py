"""The real kube-apiserver: CRD schema validation, server-side apply conflicts, Pod Security admission.
These hold on any conformant cluster, so they run against SPECULATORS_TEST_KUBECONFIG too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes.client.exceptions import (
    ApiException,
    ConflictException,
    ForbiddenException,
    UnprocessableEntityException,
)

from harness import KubeApi, pod, restricted_container

MANIFESTS = Path(__file__).parent / "manifests"
pytestmark = pytest.mark.cluster


def status_message(exc: ApiException) -> str:
    """The apiserver's Status.message from an error response."""
    return str(json.loads(exc.body)["message"])


def widget(name: str, namespace: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "proof.speculators.ai/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def test_structural_schema_rejects_invalid_object_with_apiserver_message(
    kube_api: KubeApi, namespace: str, install_crds
) -> None:
    install_crds(MANIFESTS / "widgets-crd.yaml")

    created = kube_api.create(widget("ok", namespace, size=2))
    assert created["spec"]["mode"] == "fast", "the schema default is applied by the apiserver"

    with pytest.raises(UnprocessableEntityException) as err:
        kube_api.create(widget("bad", namespace, size=0, mode="turbo"))
    msg = status_message(err.value)
    assert 'Widget.proof.speculators.ai "bad" is invalid' in msg
    assert "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1" in msg
    assert 'spec.mode: Unsupported value: "turbo": supported values: "fast", "slow"' in msg

    with pytest.raises(UnprocessableEntityException) as err:
        kube_api.create(widget("nosize", namespace, mode="slow"))
    assert "spec.size: Required value" in status_message(err.value)

    with pytest.raises(UnprocessableEntityException) as err:
        kube_api.create(widget("cel", namespace, size=8, maxSize=4))
    assert "size must not exceed maxSize" in status_message(err.value), "CEL rules run in the apiserver"


def test_server_side_apply_conflict_is_reported(kube_api: KubeApi, namespace: str) -> None:
    def cm(owner: str) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "shared", "namespace": namespace},
            "data": {"owner": owner},
        }

    kube_api.apply(cm("alice"), field_manager="alice")
    kube_api.apply(cm("alice"), field_manager="carol")  # same value: shared ownership, no conflict

    with pytest.raises(ConflictException) as err:
        kube_api.apply(cm("bob"), field_manager="bob")
    status = json.loads(err.value.body)
    assert status["reason"] == "Conflict"
    assert status["message"].startswith("Apply failed with 2 conflicts:"), status["message"]
    assert 'conflicts with "alice"' in status["message"] or 'conflict with "alice"' in status["message"]
    assert ".data.owner" in status["message"]

    forced = kube_api.apply(cm("bob"), field_manager="bob", force=True)
    assert forced["data"] == {"owner": "bob"}
    owners = {
        m["manager"]
        for m in forced["metadata"]["managedFields"]
        if "f:owner" in json.dumps(m.get("fieldsV1", {}))
    }
    assert owners == {"bob"}, "force moves the field to the new manager"


def test_restricted_namespace_rejects_privileged_pod(
    kube_api: KubeApi, namespace: str, unrestricted_namespace: str
) -> None:
    privileged = pod("priv", containers=[restricted_container(securityContext={"privileged": True})])

    with pytest.raises(ForbiddenException) as err:
        kube_api.create(privileged, namespace)
    msg = status_message(err.value)
    assert 'violates PodSecurity "restricted:latest"' in msg
    assert 'privileged (container "main" must not set securityContext.privileged=true)' in msg

    # The same pod is valid to the apiserver elsewhere, so the rejection above is Pod Security admission.
    kube_api.create(privileged, unrestricted_namespace, dry_run=True)
    # And a pod shaped like the operator's passes the restricted profile.
    kube_api.create(pod("compliant"), namespace, dry_run=True)
