"""Compat tier: vLLM 0.33.0's and upstream speculators 0.9.0's own code, run in `.venv-compat` subprocesses.

Each snippet in snippets/ reads one JSON object on stdin and prints one JSON object on its last stdout line,
so vLLM/upstream imports never enter this (pytest, .venv) process. Without .venv-compat the tests fail (CI
always builds it): run `make compat`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SNIPPETS = Path(__file__).parent / "snippets"
COMPAT_PYTHON = Path(os.environ.get("SPECULATORS_COMPAT_PYTHON", ROOT / ".venv-compat" / "bin" / "python"))

sys.path.insert(0, str(ROOT / "tests" / "core"))  # spec_builders


@pytest.fixture(scope="session")
def compat_python() -> Path:
    if not COMPAT_PYTHON.exists():
        pytest.fail(
            f"{COMPAT_PYTHON} is missing: the compat tier runs vLLM's and upstream speculators' own code "
            "from "
            "it. Build it with `make compat` (hack/setup-compat-venv.sh).",
            pytrace=False,
        )
    return COMPAT_PYTHON


@pytest.fixture(scope="session")
def run_snippet(compat_python: Path):
    def run(name: str, payload: dict[str, Any], timeout: float = 600) -> Any:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_LOGGING_LEVEL": "ERROR",
        }
        proc = subprocess.run(
            [str(compat_python), str(SNIPPETS / f"{name}.py")],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=env,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{") or line.startswith("[")]
        if proc.returncode != 0 or not lines:
            raise AssertionError(
                f"snippet {name} failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}"
            )
        return json.loads(lines[-1])

    return run
