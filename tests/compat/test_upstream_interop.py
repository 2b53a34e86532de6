"""Interop with upstream speculators 0.9.0 (its own Eagle3DraftModel, in .venv-compat): a checkpoint it saves
loads in ours with the same outputs, and ours loads in theirs with the same outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from spec_builders import AUX_IDS, make_verifier, tiny_eagle3

from speculators_core.format import Eagle3Config, load_config
from speculators_core.models import Eagle3DraftModel, load_draft_model

T = 12
LAYER = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=1,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
)

pytestmark = [pytest.mark.compat, pytest.mark.slow]


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_verifier(tmp_path_factory.mktemp("compat") / "verifier")


def _inputs(path: Path, width: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    data = {
        "input_ids": torch.randint(0, 512, (1, T), generator=g),
        "hidden_states": torch.randn(1, T, width, generator=g),
        # Two packed documents; positions restart at 1 as upstream's shift_batch leaves them.
        "document_ids": torch.tensor([[0] * 7 + [1] * 5]),
        "position_ids": torch.tensor([[1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5]]),
    }
    save_file(data, str(path))
    return data


def _ours(model: Eagle3DraftModel, data: dict[str, torch.Tensor], steps: int) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(
            data["input_ids"],
            data["hidden_states"],
            ttt_steps=steps,
            document_ids=data["document_ids"],
            position_ids=data["position_ids"],
        )
    return out.logits


@pytest.mark.parametrize(
    "flags",
    [
        {"norm_before_residual": True, "norm_before_fc": True, "norm_output": True},
        {"norm_before_residual": False, "norm_before_fc": False, "norm_output": False},
    ],
    ids=["upstream-training-defaults", "plain"],
)
def test_upstream_checkpoint_loads_in_ours(run_snippet, verifier: Path, tmp_path: Path, flags: dict) -> None:
    data = _inputs(tmp_path / "in.safetensors", 3 * 64)
    result = run_snippet(
        "upstream_eagle3",
        {
            "mode": "save",
            "dir": str(tmp_path / "upstream"),
            "inputs": str(tmp_path / "in.safetensors"),
            "outputs": str(tmp_path / "theirs.safetensors"),
            "ttt_steps": 3,
            "verifier": str(verifier),
            "layer": LAYER,
            "draft_vocab_size": 128,
            "aux_ids": AUX_IDS,
            **flags,
        },
    )
    assert result["steps"] == 3
    config = load_config(tmp_path / "upstream")
    assert isinstance(config, Eagle3Config) and config.norm_before_residual is flags["norm_before_residual"]
    ours = load_draft_model(tmp_path / "upstream")
    theirs = load_file(tmp_path / "theirs.safetensors")
    for impl in ("sdpa", "eager"):
        ours.attn_implementation = impl
        for step, logits in enumerate(_ours(ours, data, 3)):
            torch.testing.assert_close(
                logits, theirs[f"logits_{step}"], atol=1e-5, rtol=1e-5, msg=f"{impl} step {step}"
            )


@pytest.mark.parametrize(
    "variant", [{}, {"num_layers": 2, "norm_output": False}, {"fc_norm": True, "norm_before_fc": False}]
)
def test_our_checkpoint_loads_in_upstream(run_snippet, verifier: Path, tmp_path: Path, variant: dict) -> None:
    model = tiny_eagle3(verifier, **variant)
    model.save_pretrained(tmp_path / "ours")
    data = _inputs(tmp_path / "in.safetensors", model.fc.in_features)
    result = run_snippet(
        "upstream_eagle3",
        {
            "mode": "load",
            "dir": str(tmp_path / "ours"),
            "inputs": str(tmp_path / "in.safetensors"),
            "outputs": str(tmp_path / "theirs.safetensors"),
            "ttt_steps": 3,
        },
    )
    assert result["steps"] == 3
    theirs = load_file(tmp_path / "theirs.safetensors")
    for step, logits in enumerate(_ours(model, data, 3)):
        torch.testing.assert_close(logits, theirs[f"logits_{step}"], atol=1e-5, rtol=1e-5, msg=f"step {step}")
