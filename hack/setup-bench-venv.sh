#!/usr/bin/env bash
# Creates .venv-bench: GuideLLM (the real `guidellm` from PyPI, pinned) for the speed-up benchmarks and
# their tests. Like .venv-compat it reuses .venv's packages through a .pth file (torch, transformers and
# datasets are not installed twice); pip sees them as installed and adds only what GuideLLM needs beyond
# them, at the versions pinned in requirements/bench.txt (GuideLLM's own pins, e.g. click~=8.4, win inside
# this venv only). Idempotent: a stamp keyed by this script, its requirements and .venv's stamp skips the
# work when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${VENV:-.venv}
BENCH=${BENCH_VENV:-.venv-bench}

REQUIREMENTS=requirements/bench.txt  # GuideLLM and its pins beyond .venv (also the runtime image's)

. hack/lib/overlay-venv.sh
[ -x "$BASE/bin/python" ] || bash hack/setup-venv.sh
if overlay_fresh "$BASE" "$BENCH" <(cat "$0" "$REQUIREMENTS"); then exit 0; fi

overlay_venv "$BASE" "$BENCH"

"$BENCH/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS"

"$BENCH/bin/python" - <<'PY'
import guidellm, torch
from guidellm.benchmark.schemas import GenerativeBenchmarksReport  # noqa: F401  (the JSON we read)
print(f"setup-bench-venv: guidellm {guidellm.__version__ if hasattr(guidellm, '__version__') else ''}; torch {torch.__version__}")
PY
overlay_done "$BENCH"
