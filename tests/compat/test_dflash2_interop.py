"""DFlash2 checkpoints against upstream speculators 0.9.0 (its own DFlash2DraftModel) and vLLM 0.33.0 (its own
parser, and its own selector, convolution and walk code), in .venv-compat: what upstream saves loads in ours
with the same unary block logits and the same reranked drafts, ours loads in theirs the same way, vLLM
parses ours as its dflash2 path, and vLLM's inference pieces draft on our weights the tokens we draft."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dflash_case import ANCHORS, AUX, LAYER, MASK, block_logits, inputs
from safetensors.torch import load_file, save_file
from spec_builders import HIDDEN, VOCAB, make_verifier

from speculators_core.format import DFlash2Config, load_config
from speculators_core.models import DFlash2DraftModel, build_dflash2_config, load_draft_model

pytestmark = [pytest.mark.compat, pytest.mark.slow]


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_verifier(tmp_path_factory.mktemp("dflash2") / "verifier", arch="qwen3")


def _drafts(model: DFlash2DraftModel, data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Our `propose` (what the evaluator calls) after each anchor's prefix: tokens [A, k] and the proposal's
    draft logits [A, k, V]. In propose's shifted layout the block at anchor a is input_ids 1..a with the
    states of positions 0..a-1: the same block as upstream's at a, whose first document starts at 0."""
    tokens, logits = [], []
    for a in ANCHORS:
        proposal = model.propose(data["input_ids"][:, 1 : a + 1], data["hidden_states"][:, :a])
        tokens.append(proposal.token_ids[0])
        logits.append(proposal.logits[0])
    return torch.stack(tokens), torch.stack(logits)


def _assert_same_drafts(model: DFlash2DraftModel, data: dict[str, torch.Tensor], theirs: dict) -> None:
    tokens, logits = _drafts(model, data)
    assert tokens.tolist() == theirs["tokens"].tolist()
    # Our proposal's logits are the realized selector scores on upstream's candidates, -inf elsewhere.
    torch.testing.assert_close(logits.gather(-1, theirs["candidates"]), theirs["scores"])
    assert torch.isneginf(logits).sum(-1).eq(VOCAB - model.config.selector_top_k).all()
    # The walk is not the unary argmax here: the comparison covers the rerank.
    assert (theirs["tokens"] != theirs["unary_argmax"]).any()


@pytest.mark.parametrize(
    "variant",
    [
        {"block_size": 8, "sliding_window": None, "conv_kernel_size": 2, "conv_group_size": 16},
        {"block_size": 16, "sliding_window": 12, "conv_kernel_size": 3, "conv_group_size": 8},
    ],
    ids=["block8-k2-g16", "block16-sliding-k3-g8"],
)
def test_upstream_checkpoint_loads_in_ours(
    run_snippet, verifier: Path, tmp_path: Path, variant: dict
) -> None:
    data = inputs(tmp_path / "in.safetensors")
    result = run_snippet(
        "upstream_dflash2",
        {
            "mode": "save",
            "dir": str(tmp_path / "upstream"),
            "inputs": str(tmp_path / "in.safetensors"),
            "outputs": str(tmp_path / "theirs.safetensors"),
            "verifier": str(verifier),
            "layer": LAYER,
            "aux_ids": AUX,
            "mask_token_id": MASK,
            "selector_rank": 8,
            "selector_top_k": 6,
            **variant,
        },
    )
    assert result["speculative_tokens"] == variant["block_size"] - 1
    stored = load_file(tmp_path / "upstream" / "model.safetensors")
    assert not {"embed_tokens.weight", "lm_head.weight", "d2t", "t2d"} & set(stored)
    assert stored["layers.1.attention_conv.base_kernel"].shape == (2, variant["conv_kernel_size"], HIDDEN)
    assert stored["candidate_selector.predecessor_codebook"].shape == (VOCAB, 8)
    config = load_config(tmp_path / "upstream")
    assert isinstance(config, DFlash2Config) and config.sliding_window_non_causal is True
    # A round trip through our model keeps upstream's config.json key for key.
    original = result["config"]
    assert config.to_dict() == {k: v for k, v in original.items() if k not in ("dtype", "auto_map")} | {
        k: original[k] for k in ("dtype", "auto_map") if k in original
    }
    ours = load_draft_model(tmp_path / "upstream", verifier=verifier)
    assert isinstance(ours, DFlash2DraftModel)
    theirs = load_file(tmp_path / "theirs.safetensors")
    torch.testing.assert_close(block_logits(ours, data), theirs["logits"])
    _assert_same_drafts(ours, data, theirs)


def _our_model(verifier: Path, seed: int = 0, **kwargs) -> DFlash2DraftModel:
    vc = json.loads((verifier / "config.json").read_text())
    config = build_dflash2_config(
        vc,
        verifier_name_or_path=str(verifier),
        mask_token_id=MASK,
        num_layers=2,
        block_size=8,
        aux_layer_ids=AUX,
        sliding_window=16,
        selector_rank=8,
        selector_top_k=6,
        **kwargs,
    )
    torch.manual_seed(seed)
    model = DFlash2DraftModel(config)
    model.attach_verifier(verifier)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)  # away from 1, so a norm in the wrong place shows
            elif "_codebook" in name:
                p.normal_(0.0, 1.0)  # selector scores on the unary logits' scale: reranks happen
            elif "_conv." in name:
                p.normal_(0.0, 0.3)  # away from the identity init
    return model.eval()


@pytest.mark.parametrize("sample_from_anchor", [False, True], ids=["bonus-anchor", "anchor-sampled"])
def test_our_checkpoint_loads_in_upstream(
    run_snippet, verifier: Path, tmp_path: Path, sample_from_anchor: bool
) -> None:
    model = _our_model(verifier, sample_from_anchor=sample_from_anchor)
    model.save_pretrained(tmp_path / "ours")
    data = inputs(tmp_path / "in.safetensors")
    result = run_snippet(
        "upstream_dflash2",
        {
            "mode": "load",
            "dir": str(tmp_path / "ours"),
            "inputs": str(tmp_path / "in.safetensors"),
            "outputs": str(tmp_path / "theirs.safetensors"),
            "verifier": str(verifier),
        },
    )
    assert result["speculative_tokens"] == (8 if sample_from_anchor else 7)
    theirs = load_file(tmp_path / "theirs.safetensors")
    torch.testing.assert_close(theirs["logits"], block_logits(model, data))
    _assert_same_drafts(model, data, theirs)


def test_vllm_parses_ours_as_dflash2(run_snippet, verifier: Path, tmp_path: Path) -> None:
    vc = json.loads((verifier / "config.json").read_text())
    config = build_dflash2_config(
        vc, verifier_name_or_path=str(verifier), mask_token_id=MASK, aux_layer_ids=AUX, selector_top_k=6
    )
    model = DFlash2DraftModel(config)
    model.attach_verifier(verifier)
    model.save_pretrained(tmp_path / "recipe")
    directory = str(tmp_path / "recipe")
    parsed = run_snippet("vllm_parse", {"dirs": [directory]})["parsed"][directory]
    assert "error" not in parsed, parsed.get("error")
    assert parsed["speculative"] == {"method": "dflash", "num_speculative_tokens": 15}  # block 16 - 1
    pre = parsed["pretrained"]
    # DFlash2DraftModel is what picks vLLM's DFlash2 model and DFlash2Speculator (the selector walk).
    assert pre["architectures"] == parsed["config_architectures"] == ["DFlash2DraftModel"]
    assert pre["num_hidden_layers"] == 5 and pre["eagle_aux_hidden_state_layer_ids"] == AUX
    # vLLM's model reads the four dflash2 keys with int(dflash_config[key]): all there; windows non-causal.
    assert pre["dflash_config"] == {
        "mask_token_id": MASK,
        "target_layer_ids": [i - 1 for i in AUX],
        "sample_from_anchor": False,
        "causal": False,
        "conv_kernel_size": 2,
        "conv_group_size": 16,
        "selector_rank": 256,
        "selector_top_k": 6,
    }


def test_vllm_inference_code_drafts_what_we_draft(run_snippet, verifier: Path, tmp_path: Path) -> None:
    """vLLM's own CandidateSelector, walk kernel and conv (module and kernel) on our saved weights and our
    block states give our proposal's tokens and draft logits, and our convolutions' outputs."""
    model = _our_model(verifier, seed=4)
    model.save_pretrained(tmp_path / "ours")
    data = inputs(tmp_path / "unused.safetensors")
    states: list[torch.Tensor] = []
    hook = model.norm.register_forward_hook(lambda _m, _a, out: states.append(out[0, 1:].detach().clone()))
    tokens, logits = _drafts(model, data)
    hook.remove()
    k = model.config.speculative_tokens
    g = torch.Generator().manual_seed(9)
    conv_in, conv_mid = (torch.randn(3 * (k + 1), HIDDEN, generator=g) for _ in range(2))  # three blocks
    save_file(
        {
            "states": torch.stack(states),
            "anchors": data["input_ids"][0, ANCHORS],
            "conv_in": conv_in,
            "conv_mid": conv_mid,
        },
        str(tmp_path / "in.safetensors"),
    )
    result = run_snippet(
        "vllm_dflash2",
        {
            "dir": str(tmp_path / "ours"),
            "verifier": str(verifier),
            "inputs": str(tmp_path / "in.safetensors"),
            "outputs": str(tmp_path / "vllm.safetensors"),
            "num_speculative_tokens": k,
        },
    )
    assert result["top_k"] == 6
    theirs = load_file(tmp_path / "vllm.safetensors")
    assert tokens.tolist() == theirs["tokens"].tolist()
    torch.testing.assert_close(logits.gather(-1, theirs["candidates"]), theirs["scores"])
    # The walk changed at least one pick against the unary argmax of our block.
    unary = model.lm_head(torch.stack(states))
    assert (tokens != unary.argmax(-1)).any()
    for index, layer in enumerate(model.layers):
        for side in ("attention_conv", "mlp_conv"):
            conv = getattr(layer, side)
            with torch.no_grad():
                prepared, kernel = conv.prepare(conv_in[None])
                finished = conv.finish(conv_mid[None], kernel)
            name = f"layers.{index}.{side}"
            for suffix in ("", "_kernel"):
                torch.testing.assert_close(prepared[0], theirs[f"{name}.prepared{suffix}"])
                torch.testing.assert_close(finished[0], theirs[f"{name}.finished{suffix}"])
