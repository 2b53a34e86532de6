#!/usr/bin/env bash
# The README's main job: set-up, then the operator end to end on the embedded control plane
# (hack/localrun/demo.py says what it shows). KEEP=1 leaves the cluster running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup-venv.sh
BIN=$(bash hack/build-control-plane.sh | tail -1)
export PATH="$BIN:$PWD/.venv/bin:$PATH" PYTHONPATH="$PWD/hack"
exec .venv/bin/python -m localrun.demo
