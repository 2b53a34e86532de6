"""DFlash checkpoints against upstream speculators 0.9.0 (its own DFlashDraftModel) and vLLM 0.33.0 (its own
speculators parser), in .venv-compat: what upstream saves loads in ours with the same block logits, ours
loads in theirs with the same logits, and vLLM parses ours to `method: dflash` with the right k,
target layers, mask token and causality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dflash_case import AUX, LAYER, MASK, block_logits, inputs
from safetensors.torch import load_file, save_file
from spec_builders import VOCAB, make_verifier

from speculators_core.format import DFlashConfig, load_config
from speculators_core.models import DFlashDraftModel, build_dflash_config, load_draft_model

pytestmark = [pytest.mark.compat, pytest.mark.slow]


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_verifier(tmp_path_factory.mktemp("dflash") / "verifier", arch="qwen3")


@pytest.mark.parametrize(
    "variant",
    [
        {"draft_vocab_size": VOCAB, "block_size": 8, "sliding_window": None},
        {"draft_vocab_size": 128, "block_size": 16, "sliding_window": 12},
    ],
    ids=["full-vocab-block8", "draft-vocab-block16-sliding"],
)
def test_upstream_checkpoint_loads_inblock_logits(
    run_snippet, verifier: Path, tmp_path: Path, variant: dict
) -> None:
    data = inputs(tmp_path / "in.safetensors")
    result = run_snippet(
        "upstream_dflash",
        {
            "mode": "save",
            "dir": str(tmp_path / "upstream"),
            "inputs": str(tmp_path / "in.safetensors"),
            "outputs": str(tmp_path / "theirs.safetensors"),
            "verifier": str(verifier),
            "layer": LAYER,
            "aux_ids": AUX,
            "mask_token_id": MASK,
            **variant,
        },
    )
    assert result["speculative_tokens"] == variant["block_size"] - 1
    # Upstream stores neither the verifier's embeddings nor, for a full vocabulary, its lm_head.
    assert "embed_tokens.weight" not in load_file(tmp_path / "upstream" / "model.safetensors")
    config = load_config(tmp_path / "upstream")
    assert isinstance(config, DFlashConfig) and config.block_size == variant["block_size"]
    # A round trip through our model keeps upstream's config.json key for key.
    original = json.loads((tmp_path / "upstream" / "config.json").read_text())
    assert config.to_dict() == {k: v for k, v in original.items() if k not in ("dtype", "auto_map")} | {
        k: original[k] for k in ("dtype", "auto_map") if k in original
    }
    ours = load_draft_model(tmp_path / "upstream", verifier=verifier)
    torch.testing.assert_close(block_logits(ours, data), load_file(tmp_path / "theirs.safetensors")["logits"])


@pytest.mark.parametrize("draft_vocab_size", [None, 128], ids=["full-vocab", "draft-vocab"])
def test_our_checkpoint_loads_in_upstream(
    run_snippet, verifier: Path, tmp_path: Path, draft_vocab_size
) -> None:
    vc = json.loads((verifier / "config.json").read_text())
    config = build_dflash_config(
        vc,
        verifier_name_or_path=str(verifier),
        mask_token_id=MASK,
        num_layers=2,
        block_size=8,
        aux_layer_ids=AUX,
        draft_vocab_size=draft_vocab_size,
        sliding_window=16,
    )
    torch.manual_seed(0)
    model = DFlashDraftModel(config)
    if model.d2t is not None:
        selected = torch.randperm(VOCAB)[:128].sort().values
        model.set_vocab_mapping(selected - torch.arange(128))
    model.attach_verifier(verifier)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)  # away from 1, so a norm in the wrong place shows
    model.save_pretrained(tmp_path / "ours")
    data = inputs(tmp_path / "in.safetensors")
    result = run_snippet(
        "upstream_dflash",
        {
            "mode": "load",
            "dir": str(tmp_path / "ours"),
            "inputs": str(tmp_path / "in.safetensors"),
            "outputs": str(tmp_path / "theirs.safetensors"),
            "verifier": str(verifier),
        },
    )
    assert result["speculative_tokens"] == 7
    torch.testing.assert_close(
        load_file(tmp_path / "theirs.safetensors")["logits"], block_logits(model, data)
    )


def test_vllm_parses_ours_as_dflash(run_snippet, verifier: Path, tmp_path: Path) -> None:
    vc = json.loads((verifier / "config.json").read_text())
    for name, kwargs in {
        "recipe": {},
        "anchor-sampled": {"sample_from_anchor": True, "block_size": 4},
    }.items():
        config = build_dflash_config(
            vc, verifier_name_or_path=str(verifier), mask_token_id=MASK, aux_layer_ids=AUX, **kwargs
        )
        model = DFlashDraftModel(config)
        model.attach_verifier(verifier)
        model.save_pretrained(tmp_path / name)
    dirs = [str(tmp_path / n) for n in ("recipe", "anchor-sampled")]
    parsed = run_snippet("vllm_parse", {"dirs": dirs})["parsed"]
    recipe, sampled = parsed[dirs[0]], parsed[dirs[1]]
    assert "error" not in recipe, recipe.get("error")
    assert recipe["speculative"] == {"method": "dflash", "num_speculative_tokens": 15}  # block 16 - 1
    assert sampled["speculative"] == {"method": "dflash", "num_speculative_tokens": 4}
    pre = recipe["pretrained"]
    assert pre["architectures"] == ["DFlashDraftModel"] and pre["num_hidden_layers"] == 5
    assert pre["eagle_aux_hidden_state_layer_ids"] == AUX
    # vLLM reads layer i-1 for aux id i, our mask token, and a causal sliding window (we write the flag;
    # vLLM would assume non-causal without it).
    assert pre["dflash_config"] == {
        "mask_token_id": MASK,
        "target_layer_ids": [i - 1 for i in AUX],
        "sample_from_anchor": False,
        "causal": True,
    }
    assert sampled["pretrained"]["dflash_config"]["sample_from_anchor"] is True


def write_zlab(directory: Path, model: DFlashDraftModel, *, fused_qkv: bool = False) -> Path:
    """A research DFlash checkpoint in z-lab's layout (built here from a model whose weights we know):
    the draft's Qwen3 config plus dflash_config (decoder-layer target ids), the body's weights only."""
    directory.mkdir(parents=True)
    layer = model.config.transformer_layer_config.model_dump(mode="json")
    config = {
        **layer,
        "architectures": ["DFlashDraftModel"],
        "block_size": model.block_size,
        "dflash_config": {
            "mask_token_id": model.config.mask_token_id,
            "target_layer_ids": [i - 1 for i in model.config.aux_hidden_state_layer_ids],
        },
    }
    (directory / "config.json").write_text(json.dumps(config))
    state = {k: v.contiguous() for k, v in model.persistent_state().items()}
    if fused_qkv:
        for name in [k for k in state if k.endswith("self_attn.q_proj.weight")]:
            base = name.removesuffix("q_proj.weight")
            state[f"{base}qkv_proj.weight"] = torch.cat(
                [state.pop(f"{base}{p}_proj.weight") for p in ("q", "k", "v")]
            )
    save_file(state, str(directory / "model.safetensors"))
    return directory


def test_a_zlab_checkpoint_converts_as_upstream_converts_it(
    run_snippet, verifier: Path, tmp_path: Path
) -> None:
    vc = json.loads((verifier / "config.json").read_text())
    config = build_dflash_config(
        vc, verifier_name_or_path=str(verifier), mask_token_id=MASK, num_layers=2, block_size=8,
        aux_layer_ids=AUX, sliding_window=None,
    )  # fmt: skip
    torch.manual_seed(1)
    source_model = DFlashDraftModel(config)
    source_model.attach_verifier(verifier)
    source_model.eval()
    from speculators_core.convert import convert_checkpoint

    data = inputs(tmp_path / "in.safetensors")
    expected = block_logits(source_model, data)
    for fused in (False, True):
        zlab = write_zlab(tmp_path / f"zlab-{fused}", source_model, fused_qkv=fused)
        report = convert_checkpoint(zlab, verifier, "dflash", tmp_path / f"ours-{fused}", validate=True)
        assert report.validation and report.validation["ok"] and report.variant == "z-lab"
        ours = load_draft_model(tmp_path / f"ours-{fused}", verifier=verifier)
        assert ours.config.aux_hidden_state_layer_ids == AUX and ours.config.speculative_tokens == 7
        torch.testing.assert_close(block_logits(ours, data), expected)
    run_snippet(
        "upstream_convert_dflash",
        {
            "source": str(tmp_path / "zlab-False"),
            "verifier": str(verifier),
            "output": str(tmp_path / "theirs"),
        },
    )
    theirs = load_draft_model(tmp_path / "theirs", verifier=verifier)
    torch.testing.assert_close(block_logits(theirs, data), expected)
    mine, upstream = load_config(tmp_path / "ours-False"), load_config(tmp_path / "theirs")
    for key in (
        "block_size",
        "mask_token_id",
        "aux_hidden_state_layer_ids",
        "draft_vocab_size",
        "speculative_tokens",
    ):
        assert getattr(mine, key) == getattr(upstream, key), key
