"""Conversion of research checkpoints: round trips for every source format, reports, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from spec_builders import (
    AUX_IDS,
    inputs,
    make_verifier,
    tiny_eagle,
    tiny_eagle3,
    write_eagle1,
    write_nvidia_eagle3,
    write_safeailab_eagle3,
)

from speculators_core.convert import convert_checkpoint
from speculators_core.format import Eagle3Config, load_config
from speculators_core.format.errors import CheckpointError, FormatError, IncompatibleError
from speculators_core.models import load_draft_model


def _same_logits(a: torch.nn.Module, b: torch.nn.Module, steps: int = 3) -> None:
    ids, hs = inputs(a)
    with torch.no_grad():
        for x, y in zip(a(ids, hs, ttt_steps=steps).logits, b(ids, hs, ttt_steps=steps).logits, strict=True):
            torch.testing.assert_close(x, y, atol=0, rtol=0)


def _nothing_left(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("fmt", ["safetensors", "sharded", "bin", "sharded-bin"])
@pytest.mark.parametrize("with_embed", [False, True])
def test_safeailab_round_trip(verifier_dir: Path, tmp_path: Path, fmt: str, with_embed: bool) -> None:
    original = tiny_eagle3(verifier_dir, norm_before_fc=False, norm_before_residual=False, norm_output=False)
    src = write_safeailab_eagle3(tmp_path / "src", original, fmt, with_embed=with_embed)
    report = convert_checkpoint(
        src, verifier_dir, "eagle3", tmp_path / "out", validate=True, aux_layer_ids=AUX_IDS
    )
    assert report.variant == "safeailab"
    assert ("midlayer.self_attn.q_proj.weight", "layers.0.self_attn.q_proj.weight") in report.renamed
    assert [n for n, _ in report.filled] == ([] if with_embed else ["embed_tokens.weight"])
    assert report.validation and report.validation["ok"]
    assert any("norm_before_residual=false" in n for n in report.notes)
    config = load_config(tmp_path / "out")
    assert isinstance(config, Eagle3Config)
    assert config.transformer_layer_config.vocab_size == 512 and config.draft_vocab_size == 128
    assert config.verifier_name_or_path == str(verifier_dir)
    assert config.eagle_aux_hidden_state_layer_ids == AUX_IDS
    _same_logits(original, load_draft_model(tmp_path / "out"))
    assert _nothing_left(tmp_path) == []


@pytest.mark.parametrize("draft_hidden", [64, 96])
def test_nvidia_round_trip(verifier_dir: Path, tmp_path: Path, draft_hidden: int) -> None:
    overrides = {}
    if draft_hidden != 64:
        overrides = {
            "layer_overrides": {"hidden_size": draft_hidden, "head_dim": 24, "intermediate_size": 160}
        }
    original = tiny_eagle3(
        verifier_dir,
        num_layers=2,
        norm_before_fc=False,
        norm_before_residual=False,
        norm_output=False,
        **overrides,
    )
    src = write_nvidia_eagle3(tmp_path / "src", original, AUX_IDS)
    with safe_open(src / "model.safetensors", "pt") as fh:
        assert "t2d" not in set(fh.keys())
    report = convert_checkpoint(src, verifier_dir, "eagle3", tmp_path / "out", validate=True)
    assert report.variant == "nvidia"
    assert ("t2d", "derived from d2t") in report.filled
    config = load_config(tmp_path / "out")
    assert config.eagle_aux_hidden_state_layer_ids == AUX_IDS  # from eagle_config
    assert config.target_hidden_size == (None if draft_hidden == 64 else 64)
    assert config.transformer_layer_config.hidden_size == draft_hidden
    assert config.transformer_layer_config.num_hidden_layers == 2
    _same_logits(original, load_draft_model(tmp_path / "out"))


@pytest.mark.parametrize(("fusion_bias", "layernorms"), [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_eagle1_hass_round_trip(
    verifier_dir: Path, tmp_path: Path, fusion_bias: bool, layernorms: bool, fmt: str
) -> None:
    original = tiny_eagle(verifier_dir, fusion_bias=fusion_bias, layernorms=layernorms)
    src = write_eagle1(tmp_path / "src", original, fmt)
    report = convert_checkpoint(src, verifier_dir, "eagle", tmp_path / "out", validate=True)
    assert report.variant == ("hass" if fusion_bias else "eagle")
    assert ("fc.weight", "fusion_fc.weight") in report.renamed
    assert (
        "embed_tokens.weight",
        "borrowed from the verifier at load time; not stored by the format",
    ) in report.dropped
    if layernorms:
        assert ("hidden_layernorm.weight", "transformer.input_layernorm.weight") in report.renamed
        assert ("embed_layernorm.weight", "embedding_layernorm.weight") in report.renamed
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["fusion_bias"], config["layernorms"]) == (fusion_bias, layernorms)
    assert report.validation and report.validation["borrowed_tensors"] == "verifier weights"
    _same_logits(original, load_draft_model(tmp_path / "out"))


def test_convert_from_single_weight_file(verifier_dir: Path, tmp_path: Path) -> None:
    original = tiny_eagle3(verifier_dir)
    src = write_safeailab_eagle3(tmp_path / "src", original, "safetensors")
    convert_checkpoint(
        src / "model.safetensors",
        verifier_dir,
        "eagle3",
        tmp_path / "out",
        norm_before_residual=True,
        norm_output=True,
    )
    converted = load_draft_model(tmp_path / "out")
    assert converted.config.norm_before_fc  # detected from input_norm.weight
    _same_logits(original, converted)


# ----------------------------------------------------------------------------- bad input
def _convert_fails(tmp_path: Path, exc: type[Exception], match: str, *args, **kwargs) -> Exception:
    out = tmp_path / "out"
    with pytest.raises(exc, match=match) as err:
        convert_checkpoint(*args, out, **kwargs)
    assert not out.exists(), "nothing may be written when conversion fails"
    assert _nothing_left(tmp_path) == []
    return err.value


def test_truncated_safetensors(verifier_dir: Path, tmp_path: Path) -> None:
    src = write_safeailab_eagle3(tmp_path / "src", tiny_eagle3(verifier_dir), "safetensors")
    path = src / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    _convert_fails(
        tmp_path, CheckpointError, r"src/model\.safetensors: truncated", src, verifier_dir, "eagle3"
    )


def test_corrupt_bin(verifier_dir: Path, tmp_path: Path) -> None:
    src = write_eagle1(tmp_path / "src", tiny_eagle(verifier_dir), "bin")
    (src / "pytorch_model.bin").write_bytes(b"garbage" * 10)
    _convert_fails(
        tmp_path,
        CheckpointError,
        r"pytorch_model\.bin: cannot read PyTorch weights",
        src,
        verifier_dir,
        "eagle",
    )


def test_missing_shard(verifier_dir: Path, tmp_path: Path) -> None:
    src = write_safeailab_eagle3(tmp_path / "src", tiny_eagle3(verifier_dir), "sharded")
    (src / "model-00002-of-00002.safetensors").unlink()
    _convert_fails(
        tmp_path,
        CheckpointError,
        "listed in model.safetensors.index.json but missing",
        src,
        verifier_dir,
        "eagle3",
    )


def test_unexpected_tensor_is_an_error_unless_ignored(verifier_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    src = write_safeailab_eagle3(tmp_path / "src", tiny_eagle3(verifier_dir), "safetensors")
    state = load_file(src / "model.safetensors")
    state["mtp_head.weight"] = torch.zeros(4, 4)
    save_file(state, str(src / "model.safetensors"))
    err = _convert_fails(
        tmp_path, CheckpointError, r"unexpected tensors \['mtp_head.weight'\]", src, verifier_dir, "eagle3"
    )
    assert "--ignore-tensor" in str(err)
    report = convert_checkpoint(src, verifier_dir, "eagle3", tmp_path / "out", ignore_tensors=["mtp_*"])
    assert ("mtp_head.weight", "ignored by --ignore-tensor") in report.dropped


def test_wrong_shape_names_the_tensor(verifier_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    src = write_safeailab_eagle3(tmp_path / "src", tiny_eagle3(verifier_dir), "safetensors")
    state = load_file(src / "model.safetensors")
    state["midlayer.mlp.down_proj.weight"] = torch.zeros(64, 100)
    save_file(state, str(src / "model.safetensors"))
    _convert_fails(
        tmp_path,
        CheckpointError,
        r"'layers.0.mlp.down_proj.weight' has shape \[64, 100\]",
        src,
        verifier_dir,
        "eagle3",
    )


def test_vocab_mismatch_with_verifier(verifier_dir: Path, tmp_path: Path) -> None:
    src = write_safeailab_eagle3(tmp_path / "src", tiny_eagle3(verifier_dir), "safetensors")
    other = make_verifier(tmp_path / "other-verifier", vocab_size=600)
    err = _convert_fails(tmp_path, IncompatibleError, "vocab_size 512", src, other, "eagle3")
    assert "600" in str(err)
    e1 = write_eagle1(tmp_path / "e1", tiny_eagle(verifier_dir))
    _convert_fails(tmp_path, IncompatibleError, "vocab_size 512 differs", e1, other, "eagle")


def test_hidden_size_mismatch_with_verifier(verifier_dir: Path, tmp_path: Path) -> None:
    src = write_safeailab_eagle3(tmp_path / "src", tiny_eagle3(verifier_dir), "safetensors")
    other = make_verifier(tmp_path / "wide", hidden_size=96, head_dim=24)
    _convert_fails(tmp_path, IncompatibleError, "width 64 but the verifier", src, other, "eagle3")


def test_d2t_inconsistent_with_draft_vocab_size(verifier_dir: Path, tmp_path: Path) -> None:
    src = write_safeailab_eagle3(tmp_path / "src", tiny_eagle3(verifier_dir), "safetensors")
    config = json.loads((src / "config.json").read_text())
    config["draft_vocab_size"] = 100
    (src / "config.json").write_text(json.dumps(config))
    _convert_fails(tmp_path, CheckpointError, "config.json draft_vocab_size 100", src, verifier_dir, "eagle3")


def test_d2t_and_t2d_disagree(verifier_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    src = write_safeailab_eagle3(tmp_path / "src", tiny_eagle3(verifier_dir), "safetensors")
    state = load_file(src / "model.safetensors")
    t2d = state["t2d"].clone()
    first_kept = int(t2d.nonzero()[0])
    t2d[first_kept] = False
    t2d[(~t2d).nonzero()[0]] = True  # same count, different tokens
    state["t2d"] = t2d
    save_file(state, str(src / "model.safetensors"))
    _convert_fails(tmp_path, CheckpointError, "d2t and t2d disagree", src, verifier_dir, "eagle3")


def test_refuses_wrong_algorithm_and_speculators_input(verifier_dir: Path, tmp_path: Path) -> None:
    model = tiny_eagle3(verifier_dir)
    src = write_safeailab_eagle3(tmp_path / "src", model, "safetensors")
    _convert_fails(tmp_path, FormatError, "allowed: eagle3, eagle", src, verifier_dir, "medusa")
    _convert_fails(
        tmp_path,
        CheckpointError,
        "SafeAILab EAGLE-3; convert with --algorithm eagle3",
        src,
        verifier_dir,
        "eagle",
    )
    model.save_pretrained(tmp_path / "spec")
    _convert_fails(
        tmp_path, FormatError, "already a speculators checkpoint", tmp_path / "spec", verifier_dir, "eagle3"
    )
    e1 = write_eagle1(tmp_path / "e1", tiny_eagle(verifier_dir, fusion_bias=True))
    _convert_fails(tmp_path, CheckpointError, "fc has no bias", e1, verifier_dir, "eagle3")


def test_existing_output_is_refused_then_overwritten(verifier_dir: Path, tmp_path: Path) -> None:
    src = write_safeailab_eagle3(tmp_path / "src", tiny_eagle3(verifier_dir), "safetensors")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FormatError, match="not empty"):
        convert_checkpoint(src, verifier_dir, "eagle3", out)
    assert (out / "keep.txt").exists()
    convert_checkpoint(src, verifier_dir, "eagle3", out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
