"""Root conftest: loads the cluster harness (tests/harness/fixtures.py). Fixtures: cluster, kube_api,
namespace, unrestricted_namespace, install_crds, third_party_crds, kopf_runner, wait_for."""

import sys
from pathlib import Path

# `harness` is a sibling package; make it importable whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["harness.fixtures"]
