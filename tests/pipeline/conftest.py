"""Fixtures of the pipeline tests: a tiny real stack (tokenizer trained locally, Llama verifier trained on
the synthetic corpus), built once and cached (SPECULATORS_TESTING_CACHE, default ~/.cache/...), and the
prepare-data / datagen outputs on it, built once per session through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: stable timing on shared CI machines, and the same matmul order in every run."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cli(*argv: str, expect: int = 0) -> int:
    from speculators_core.cli.main import main

    rc = main([str(a) for a in argv])
    assert rc == expect, f"speculators {' '.join(map(str, argv))} exited {rc}, expected {expect}"
    return rc


def cli_subprocess(
    *argv: str, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process (exit codes, resource limits, kills), one thread, repo on the path."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "speculators_core.cli", *map(str, argv)],
        env=full_env,
        capture_output=True,
        text=True,
        **kwargs,
    )


def run_datagen(stack: Any, data: Path, output: Path, shard: int, *extra: Any, num_shards: int = 2) -> int:
    """`speculators datagen` for one shard of the tests' layout (small chunks: several files per shard)."""
    return cli(
        *("datagen", "--verifier", stack.verifier, "--data", data, "--output", output),
        *("--num-shards", num_shards, "--shard-index", shard, "--chunk-tokens", 4000, *extra),
    )


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="session")
def stack():
    from speculators_core.testing.verifier import TinyStackSpec, build_tiny_stack

    return build_tiny_stack(TinyStackSpec())


@pytest.fixture(scope="session")
def prepared(stack, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "data"
    cli(
        "prepare-data",
        "--verifier",
        stack.verifier,
        "--data",
        stack.train_data,
        "--output",
        out,
        "--max-length",
        160,
        "--max-samples",
        300,
        "--holdout-fraction",
        0.1,
    )
    return out


@pytest.fixture(scope="session")
def hidden_states(stack, prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hs") / "hidden_states"
    for i in range(2):
        run_datagen(stack, prepared, out, i)
    return out
