"""vLLM serve argv: long/short form, speculative-config JSON, the remote-verifier rule."""

from __future__ import annotations

import json
import os
import random
import string
from pathlib import Path

import pytest
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from speculators_core.serving import (
    ServingError,
    build_serve_argv,
    build_serve_argv_for,
    build_short_serve_argv,
    format_command,
    is_valid_repo_id,
    short_form_applies,
    speculative_config,
)


def test_long_form_argv() -> None:
    argv = build_serve_argv(
        "/models/verifier",
        "/models/draft",
        "eagle3",
        3,
        tensor_parallel_size=2,
        max_model_len=8192,
        gpu_memory_utilization=0.85,
        port=8000,
        served_model_name="llama",
        extra_args=["--enable-prefix-caching"],
    )
    assert argv[:5] == [
        "vllm",
        "serve",
        "/models/verifier",
        "--speculative-config",
        '{"model":"/models/draft","method":"eagle3","num_speculative_tokens":3}',
    ]
    assert argv[5:] == [
        "--tensor-parallel-size",
        "2",
        "--max-model-len",
        "8192",
        "--gpu-memory-utilization",
        "0.85",
        "--port",
        "8000",
        "--served-model-name",
        "llama",
        "--enable-prefix-caching",
    ]
    assert "tensor_parallel_size" not in argv[4]
    assert format_command(argv[:5]).endswith(
        """--speculative-config '{"model":"/models/draft","method":"eagle3","num_speculative_tokens":3}'"""
    )


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("eagle3", {"method": "eagle3"}),
        ("peagle", {"method": "eagle3", "parallel_drafting": True}),
        ("dflash", {"method": "dflash"}),
        ("dspark", {"method": "dspark"}),
        ("eagle", {"method": "eagle"}),
    ],
)
def test_methods(method: str, expected: dict) -> None:
    config = json.loads(build_serve_argv("v", "d", method, 5)[4])
    assert config == {"model": "d", "num_speculative_tokens": 5, **expected}


def test_speculative_extras_and_refusals() -> None:
    config = speculative_config(
        "d", "eagle3", 4, {"draft_tensor_parallel_size": 1, "attention_backend": "FLASH_ATTN"}
    )
    assert config["draft_tensor_parallel_size"] == 1 and config["attention_backend"] == "FLASH_ATTN"
    with pytest.raises(ServingError, match="draft_tensor_parallel_size"):
        speculative_config("d", "eagle3", 4, {"tensor_parallel_size": 2})
    with pytest.raises(ServingError, match="method is set from the draft"):
        speculative_config("d", "eagle3", 4, {"method": "eagle"})
    with pytest.raises(ServingError, match="allowed: eagle3, eagle, peagle, dflash, dspark"):
        build_serve_argv("v", "d", "medusa", 3)
    with pytest.raises(ServingError, match=">= 1"):
        build_serve_argv("v", "d", "eagle3", 0)
    with pytest.raises(ServingError, match="port"):
        build_serve_argv("v", "d", "eagle3", 3, port=70000)
    with pytest.raises(ServingError, match="gpu_memory_utilization"):
        build_serve_argv("v", "d", "eagle3", 3, gpu_memory_utilization=1.5)
    with pytest.raises(ServingError, match="conflicts"):
        build_serve_argv("v", "d", "eagle3", 3, extra_args=["--speculative-config={}"])


def test_short_form() -> None:
    assert build_short_serve_argv("/models/draft") == ["vllm", "serve", "/models/draft"]
    argv = build_short_serve_argv("org/draft", num_speculative_tokens=5, tensor_parallel_size=4)
    assert argv == [
        "vllm",
        "serve",
        "org/draft",
        "--speculative-config",
        '{"num_speculative_tokens":5}',
        "--tensor-parallel-size",
        "4",
    ]


def test_short_form_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert short_form_applies("meta-llama/Llama-3.1-8B-Instruct")
    assert short_form_applies("gpt2")
    assert not short_form_applies("/models/llama-3.1-8b")
    assert not short_form_applies("./out_eagle3")
    assert not short_form_applies(None)
    assert not short_form_applies("")
    # A valid repo id that also exists locally is a local path for vLLM.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "model").mkdir(parents=True)
    assert not short_form_applies("org/model")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    assert not short_form_applies("dangling")
    assert build_serve_argv_for("org/model", "d", "eagle3", 3)[2] == "org/model"  # long form
    assert build_serve_argv_for("org/other", "d", "eagle3", 3) == ["vllm", "serve", "d"]
    with pytest.raises(ServingError, match=r"no verifier\.name_or_path"):
        build_serve_argv_for(None, "d", "eagle3", 3)


def _hf_accepts(name: str) -> bool:
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def test_repo_id_rule_matches_huggingface_hub() -> None:
    cases = [
        "a",
        "org/name",
        "org/name/extra",
        "/abs/path",
        "./rel",
        "../up",
        "name.git",
        "a--b",
        "a..b",
        "-a",
        "a-",
        ".a",
        "a.",
        "_a",
        "a_",
        "x" * 96,
        "x" * 97,
        "o/" + "x" * 96,
        "o/" + "x" * 97,
        "org/na me",
        "é",
        "org//n",
        "org/",
        "/name",
        "~/models",
        "C:\\models",
        "a.b-c_d/E.F",
        "1/2",
    ]
    rng = random.Random(0)
    alphabet = string.ascii_letters + string.digits + "-_./ ~é"
    cases += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(2000)]
    for name in cases:
        assert is_valid_repo_id(name) == _hf_accepts(name), name
