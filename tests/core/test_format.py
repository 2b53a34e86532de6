"""speculators config.json: validation, round trips, registry, safetensors headers, torch-freedom."""

from __future__ import annotations

import copy
import json
import struct
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import torch
from safetensors.torch import save_file

from speculators_core.format import (
    CheckpointError,
    Eagle3Config,
    EagleConfig,
    FormatError,
    SpeculatorModelConfig,
    config_from_dict,
    config_to_json,
    count_params,
    get_speculator_type,
    known_types,
    load_config,
    register_speculator_type,
    save_config,
)
from speculators_core.format.safetensors_header import read_header

ROOT = Path(__file__).resolve().parents[2]


def eagle3_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "architectures": ["Eagle3DraftModel"],
        "speculators_model_type": "eagle3",
        "speculators_version": "0.9.0",
        "speculators_config": {
            "algorithm": "eagle3",
            "proposal_methods": [
                {
                    "proposal_type": "greedy",
                    "speculative_tokens": 3,
                    "verifier_accept_k": 1,
                    "accept_tolerance": 0.0,
                }
            ],
            "default_proposal_method": "greedy",
            "verifier": {
                "name_or_path": "meta-llama/Llama-3.1-8B-Instruct",
                "architectures": ["LlamaForCausalLM"],
            },
        },
        "transformer_layer_config": {
            "model_type": "llama",
            "vocab_size": 1024,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5,
            "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
        },
        "draft_vocab_size": 256,
        "norm_before_residual": False,
        "norm_before_fc": True,
        "fc_norm": False,
        "norm_output": True,
        "target_hidden_size": None,
        "eagle_aux_hidden_state_layer_ids": [2, 16, 29],
        "embed_requires_grad": False,
        "auto_map": {"": "config.Eagle3SpeculatorConfig"},
        "transformers_version": "5.19.0",
    }
    data.update(overrides)
    return data


def test_round_trip_preserves_everything(tmp_path: Path) -> None:
    data = eagle3_dict()
    config = config_from_dict(data)
    assert isinstance(config, Eagle3Config)
    assert config.speculative_tokens == 3 and config.vocab_sizes() == (1024, 256)
    assert config.num_aux_layers == 3 and config.uses_vocab_mapping
    save_config(config, tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written == data  # unknown keys kept, nothing added or dropped
    assert load_config(tmp_path).to_dict() == data
    assert not list(tmp_path.glob(".config.json.*"))  # the temporary file was renamed


def test_norm_before_residual_always_written() -> None:
    config = config_from_dict(eagle3_dict(norm_before_residual=False))
    assert json.loads(config_to_json(config))["norm_before_residual"] is False


def test_missing_norm_before_residual_reads_as_vllm_does() -> None:
    data = eagle3_dict()
    del data["norm_before_residual"]
    with pytest.warns(UserWarning, match="as vLLM does"):
        config = config_from_dict(data)
    assert config.norm_before_residual is True


def test_layer_config_defaults_are_not_invented() -> None:
    config = config_from_dict(eagle3_dict())
    layer = config.to_dict()["transformer_layer_config"]
    assert "head_dim" not in layer and layer["rms_norm_eps"] == 1e-5


def _set(data: dict, path: str, value: Any) -> dict:
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


_DELETE = object()

BAD = [
    ("model_type", "llama", "must not have a top-level model_type"),
    ("speculators_model_type", "medusa", "allowed: dflash, dflash2, dspark, eagle, eagle3"),
    (
        "transformer_layer_config.model_type",
        "qwen2",
        "transformer_layer_config.model_type: Input should be 'llama' or 'qwen3'",
    ),
    ("transformer_layer_config.vocab_size", 0, "transformer_layer_config.vocab_size"),
    ("transformer_layer_config.num_key_value_heads", 3, "multiple of num_key_value_heads"),
    ("draft_vocab_size", 4096, "cannot exceed the verifier vocabulary"),
    ("norm_before_fc", "maybe", "norm_before_fc"),
    ("fc_norm", True, "norm_before_fc and fc_norm are mutually exclusive"),
    ("eagle_aux_hidden_state_layer_ids", [2, 2, 5], "distinct"),
    ("speculators_config.proposal_methods.0.proposal_type", "sampling", "allowed: greedy"),
    (
        "speculators_config.proposal_methods.0.speculative_tokens",
        0,
        "speculative_tokens: Input should be greater than or equal to 1",
    ),
    ("speculators_config.default_proposal_method", "tree", "allowed: greedy"),
    ("speculators_config.proposal_methods", [], "proposal_methods"),
    ("speculators_config.verifier", _DELETE, "speculators_config.verifier: Field required"),
    ("draft_vocab_size", _DELETE, "draft_vocab_size: Field required"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[b[0] + "=" + repr(b[1])[:12] for b in BAD])
def test_invalid_fields_are_named(path: str, value: Any, message: str) -> None:
    data = (
        _set(eagle3_dict(), path, value) if path != "model_type" else {**eagle3_dict(), "model_type": value}
    )
    with pytest.raises(FormatError) as err:
        config_from_dict(data, source="draft/config.json")
    assert str(err.value).startswith("draft/config.json: ")
    assert message in str(err.value)


def test_not_a_speculators_config(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="speculators convert"):
        config_from_dict({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        load_config(tmp_path)
    with pytest.raises(FormatError, match="no such file"):
        load_config(tmp_path / "missing")


def test_eagle_legacy_config() -> None:
    data = {
        "speculators_model_type": "eagle",
        "speculators_config": eagle3_dict()["speculators_config"] | {"algorithm": "eagle"},
        "transformer_layer_config": eagle3_dict()["transformer_layer_config"],
        "layernorms": True,
        "fusion_bias": True,
        "transformer_layer_architecture": "LlamaDecoderLayer",
    }
    config = config_from_dict(data)
    assert isinstance(config, EagleConfig) and config.fusion_bias and config.layernorms
    assert config.to_dict()["architectures"] == ["EagleSpeculator"]
    assert get_speculator_type("eagle").vllm_serves is False


def test_envelope_only_types_give_method_and_k() -> None:
    data = {
        "speculators_model_type": "dspark",
        "speculators_config": eagle3_dict()["speculators_config"] | {"algorithm": "dspark"},
        "block_size": 8,
        "aux_hidden_state_layer_ids": [1, 9, 17],
        "draft_vocab_size": 32000,
        "transformer_layer_config": {"model_type": "qwen3", "vocab_size": 151936},
    }
    config = config_from_dict(data)
    assert type(config) is SpeculatorModelConfig
    assert config.speculative_tokens == 3 and config.vocab_sizes() == (151936, 32000)
    assert get_speculator_type("dflash2").method == "dflash"
    assert get_speculator_type("peagle").method == "peagle"
    assert config.to_dict()["block_size"] == 8


def test_registry_accepts_new_types_without_core_changes() -> None:
    @register_speculator_type("toy-mtp", method=None, vllm_serves=False, has_model=False, description="test")
    class ToyConfig(SpeculatorModelConfig):
        default_architectures: ClassVar[list[str]] = ["Toy"]
        speculators_model_type: Literal["toy-mtp"] = "toy-mtp"
        num_heads: int

    try:
        data = {
            "speculators_model_type": "toy-mtp",
            "speculators_config": eagle3_dict()["speculators_config"],
        }
        with pytest.raises(FormatError, match="num_heads: Field required"):
            config_from_dict(data)
        config = config_from_dict({**data, "num_heads": 2})
        assert isinstance(config, ToyConfig) and "toy-mtp" in known_types()
    finally:
        from speculators_core.format import registry

        registry._REGISTRY.pop("toy-mtp")


def test_safetensors_header_counts_and_truncation(tmp_path: Path) -> None:
    state = {
        "a.weight": torch.zeros(3, 4),
        "b": torch.zeros(5, dtype=torch.long),
        "embed_tokens.weight": torch.zeros(7, 2),
    }
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    infos = read_header(path)
    assert {k: v.shape for k, v in infos.items()} == {k: tuple(v.shape) for k, v in state.items()}
    assert count_params(tmp_path) == (12 + 14, 12, "F32")
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated"):
        read_header(path)
    path.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(CheckpointError, match="corrupt or truncated safetensors header"):
        read_header(path)


@pytest.mark.parametrize(
    "first", ["speculators_core.format", "speculators_core.serving", "speculators_core.eval.cost"]
)
def test_format_and_serving_import_without_torch(first: str) -> None:
    """The operator imports these (in either order) and never torch."""
    code = (
        f"import sys; import {first}; import speculators_core.format, speculators_core.serving, "
        "speculators_core.eval.cost; "
        "bad = [m for m in ('torch', 'transformers', 'safetensors', 'huggingface_hub') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_warning_free_round_trip_for_written_configs() -> None:
    config = config_from_dict(eagle3_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config_from_dict(json.loads(config_to_json(config)))
