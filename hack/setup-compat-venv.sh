#!/usr/bin/env bash
# Creates .venv-compat for the compat test tier: vLLM's and upstream speculators' own code, run in
# subprocesses by tests/compat. It reuses .venv's packages through a .pth file (torch, transformers, ... are
# not installed twice) and adds, with --no-deps, vllm and speculators (whose pins would replace our torch),
# plus the small packages their config modules import. Idempotent: a stamp keyed by this script and .venv's
# stamp skips the work when nothing changed.
# Wheels already downloaded can be offered with COMPAT_FIND_LINKS="dir1 dir2" (no index change).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${VENV:-.venv}
COMPAT=${COMPAT_VENV:-.venv-compat}

VLLM_VERSION=0.33.0
SPECULATORS_VERSION=0.9.0
# Installed without dependencies: their declared pins (torch==2.14.0 / CUDA wheels) must not replace .venv's.
NO_DEPS=(
  "vllm==${VLLM_VERSION}"
  "speculators==${SPECULATORS_VERSION}"
  "hs-connectors==0.9.0"
)
# What vLLM's config package (SpeculativeConfig) and upstream speculators import beyond .venv, pinned.
EXTRAS=(
  "cbor2==6.3.0"
  "psutil==7.2.2"
  "pyzmq==27.3.0"
  "openai-harmony==0.0.8"
  "openai==3.54.0"
  "jiter==0.19.0"
  "sniffio==1.3.1"
  "loguru==0.7.3"
  "pydantic-settings==2.16.3"
  "python-dotenv==1.2.4"
)

. hack/lib/overlay-venv.sh
[ -x "$BASE/bin/python" ] || bash hack/setup-venv.sh
if overlay_fresh "$BASE" "$COMPAT" "$0"; then exit 0; fi

find_links=()
for d in ${COMPAT_FIND_LINKS:-}; do find_links+=(--find-links "$d"); done

overlay_venv "$BASE" "$COMPAT"

"$COMPAT/bin/python" -m pip install -q --disable-pip-version-check --no-deps "${find_links[@]}" "${NO_DEPS[@]}" "${EXTRAS[@]}"

# Fail here, not in the tests, if an import the compat tier relies on is broken.
"$COMPAT/bin/python" - <<'PY'
import vllm.config  # noqa: F401  (SpeculativeConfig)
from vllm.transformers_utils.configs.speculators.base import SpeculatorsConfig  # noqa: F401
from speculators.models import Eagle3DraftModel  # noqa: F401
import torch, transformers
print(f"setup-compat-venv: vllm + speculators import; torch {torch.__version__}, transformers {transformers.__version__}")
PY
overlay_done "$COMPAT"
echo "setup-compat-venv: $COMPAT ready" >&2
