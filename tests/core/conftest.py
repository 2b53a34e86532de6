"""Fixtures of the core tier: a tiny real verifier saved with transformers (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
from spec_builders import make_verifier


@pytest.fixture(scope="session")
def verifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_verifier(tmp_path_factory.mktemp("verifier") / "tiny-llama")


@pytest.fixture(scope="session")
def qwen3_verifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_verifier(tmp_path_factory.mktemp("verifier") / "tiny-qwen3", arch="qwen3")
