#!/usr/bin/env bash
# Creates .venv (Python >= 3.11) with the project and every extra, pinned by requirements/constraints.txt.
# Idempotent and quick when nothing changed (a stamp keyed by the inputs' hash). The pip cache is kept
# across runs, so the large torch wheel (PyPI's Linux build carries CUDA; it runs on CPU) downloads once.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-operator,ml,report,dev}
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for c in python3.13 python3.12 python3.11 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then PYTHON=$c; break; fi
  done
fi
[ -n "$PYTHON" ] || { echo "setup-venv: Python >= 3.11 is required" >&2; exit 1; }

stamp="$VENV/.setup-stamp"
want=$(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-16)-$EXTRAS
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
"$VENV/bin/python" -m pip install -q -c requirements/constraints.txt -e ".[${EXTRAS}]"
echo "$want" > "$stamp"
echo "setup-venv: $VENV ready ($("$VENV/bin/python" --version))" >&2
