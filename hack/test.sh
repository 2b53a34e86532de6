#!/usr/bin/env bash
# The README's test command: set-up (venv, compat and bench venvs, Chromium, control plane), then the
# whole suite, every tier.
# The Go build and the pip installs are independent, so they run side by side on a cold machine.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .work
bash hack/build-control-plane.sh > .work/control-plane-bin 2> .work/control-plane-build.log &
cp_pid=$!
bash hack/setup-venv.sh
bash hack/setup-compat-venv.sh
bash hack/setup-bench-venv.sh
bash hack/setup-chromium.sh
if ! wait "$cp_pid"; then
  tail -50 .work/control-plane-build.log >&2
  echo "test: building the control plane failed (log: .work/control-plane-build.log)" >&2
  exit 1
fi
export SPECULATORS_K8S_BIN=$(tail -1 .work/control-plane-bin)
export PYTHONPATH="$PWD/hack${PYTHONPATH:+:$PYTHONPATH}"
set +e
.venv/bin/python -m pytest -m "" "$@"
rc=$?
set -e
# pytest exits 5 when it collected nothing: that must never count as a pass.
if [ $rc -eq 5 ]; then echo "test: no tests were collected" >&2; exit 1; fi
exit $rc
