#!/usr/bin/env bash
# Creates .venv-bench: GuideLLM (the real `guidellm` from PyPI, pinned) for the speed-up benchmarks and
# their tests. Like .venv-compat it reuses .venv's packages through a .pth file (torch, transformers and
# datasets are not installed twice); pip sees them as installed and adds only what GuideLLM needs beyond
# them, at the versions pinned below (GuideLLM's own pins, e.g. click~=8.4, win inside this venv only).
# Idempotent: a stamp keyed by this script and .venv's stamp skips the work when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${VENV:-.venv}
BENCH=${BENCH_VENV:-.venv-bench}

GUIDELLM_VERSION=0.8.1
# What guidellm 0.8.1 needs beyond .venv, pinned (checked against its Requires-Dist).
PINS=(
  "guidellm==${GUIDELLM_VERSION}"
  "click==8.4.2"
  "culsans==0.10.0"
  "eval_type_backport==0.4.0"
  "faker==40.63.0"
  "ftfy==6.3.1"
  "h2==4.4.1"
  "msgpack==1.2.4"
  "protobuf==7.36.2"
  "tabulate==0.10.0"
  "uvloop==0.23.0"
  "more-itertools==11.2.1"
  "websockets==17.4"
  "loguru==0.7.3"
)

. hack/lib/overlay-venv.sh
[ -x "$BASE/bin/python" ] || bash hack/setup-venv.sh
if overlay_fresh "$BASE" "$BENCH" "$0"; then exit 0; fi

overlay_venv "$BASE" "$BENCH"

"$BENCH/bin/python" -m pip install -q --disable-pip-version-check "${PINS[@]}"

"$BENCH/bin/python" - <<'PY'
import guidellm, torch
from guidellm.benchmark.schemas import GenerativeBenchmarksReport  # noqa: F401  (the JSON we read)
print(f"setup-bench-venv: guidellm {guidellm.__version__ if hasattr(guidellm, '__version__') else ''}; torch {torch.__version__}")
PY
overlay_done "$BENCH"
