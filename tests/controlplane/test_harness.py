"""The harness fixtures themselves: namespaces and the in-process operator runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import KubeApi, wait_for

ECHO_OPERATOR = Path(__file__).parent / "operators" / "echo.py"
pytestmark = pytest.mark.cluster


def test_namespace_enforces_restricted_pod_security(
    kube_api: KubeApi, namespace: str, unrestricted_namespace: str
) -> None:
    labels = kube_api.get("v1", "Namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    plain = kube_api.get("v1", "Namespace", unrestricted_namespace)["metadata"]["labels"]
    assert not any(k.startswith("pod-security.kubernetes.io/") for k in plain)
    assert namespace != unrestricted_namespace


def test_kopf_runner_runs_an_operator_in_process(kube_api: KubeApi, namespace: str, kopf_runner) -> None:
    runner = kopf_runner(["run", "--standalone", "--namespace", namespace, str(ECHO_OPERATOR)])
    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "hello", "labels": {"speculators.ai/echo": "true"}},
            "data": {"say": "hello from the test"},
        },
        namespace,
    )
    cm = wait_for(
        lambda: kube_api.get("v1", "ConfigMap", "hello", namespace),
        lambda c: (
            (c["metadata"].get("annotations") or {}).get("speculators.ai/echoed") == "hello from the test"
        ),
        what="the operator to annotate the ConfigMap",
    )
    assert cm["data"] == {"say": "hello from the test"}
    assert not runner.future.done(), "the operator keeps running until the test ends"
