"""Test harness: the session cluster, API clients, namespaces, CRD installs, an in-process operator.

The fixtures live in `harness.fixtures` (a pytest plugin that tests/conftest.py loads); helpers that tests
import directly are re-exported here.
"""

from kubecluster.wait import WaitTimeout, wait_for

from .kube import KubeApi
from .objects import deployment, job, pod, restricted_container, restricted_pod_spec
from .session import TestCluster

__all__ = [
    "KubeApi",
    "TestCluster",
    "WaitTimeout",
    "deployment",
    "job",
    "pod",
    "restricted_container",
    "restricted_pod_spec",
    "wait_for",
]
