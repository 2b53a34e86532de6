"""DFlash format and model without upstream or vLLM (the compat tier checks those): config rules that name
the field, what inspect shows, the block attention pattern, and the model's invariants (a block never sees
its own future context or another document, drafting equals the block forward, a trained reduced head
survives loading the verifier)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from spec_builders import HIDDEN, VOCAB, make_verifier

from speculators_core.cli.main import main
from speculators_core.format import DFlashConfig, config_from_dict, describe_checkpoint
from speculators_core.format.errors import FormatError
from speculators_core.models import DFlashDraftModel, build_dflash_config, load_draft_model
from speculators_core.models.dflash import block_mask

AUX = [1, 4, 7]
MASK = VOCAB - 1


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_verifier(tmp_path_factory.mktemp("dflash") / "verifier", arch="qwen3")


def config(verifier: Path, **kw) -> DFlashConfig:
    vc = json.loads((verifier / "config.json").read_text())
    kw = {"num_layers": 2, "block_size": 8, "aux_layer_ids": AUX, "sliding_window": None, **kw}
    return build_dflash_config(vc, verifier_name_or_path=str(verifier), mask_token_id=MASK, **kw)


def model(verifier: Path, seed: int = 0, **kw) -> DFlashDraftModel:
    torch.manual_seed(seed)
    m = DFlashDraftModel(config(verifier, **kw))
    if m.d2t is not None:
        selected = torch.randperm(VOCAB)[: m.draft_vocab_size].sort().values
        m.set_vocab_mapping(selected - torch.arange(m.draft_vocab_size))
    m.attach_verifier(verifier)
    return m.eval()


def test_recipe_defaults(verifier: Path) -> None:
    vc = json.loads((verifier / "config.json").read_text())
    c = build_dflash_config(vc, verifier_name_or_path=str(verifier), mask_token_id=MASK)
    assert (c.block_size, c.transformer_layer_config.num_hidden_layers, c.speculative_tokens) == (16, 5, 15)
    assert c.aux_hidden_state_layer_ids == [2, 4, 5]  # [2, n//2, n-3] of an 8-layer verifier
    assert c.sliding_window_non_causal is False and c.sample_from_anchor is False
    layer = c.transformer_layer_config.model_dump()
    assert layer["sliding_window"] == 2048 and layer["layer_types"] == ["sliding_attention"] * 5
    data = c.to_dict()
    # Always written: vLLM assumes a non-causal window when the key is absent.
    assert data["sliding_window_non_causal"] is False and data["architectures"] == ["DFlashDraftModel"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["speculators_config"]["proposal_methods"][0].update(speculative_tokens=8),
            "exceeds what a block",
        ),
        (lambda d: d.update(mask_token_id=VOCAB), "mask_token_id"),
        (lambda d: d.pop("mask_token_id"), "mask_token_id"),
        (lambda d: d.pop("aux_hidden_state_layer_ids"), "aux_hidden_state_layer_ids"),
        (lambda d: d.update(aux_hidden_state_layer_ids=[3, 3]), "distinct"),
        (lambda d: d.update(draft_vocab_size=VOCAB + 1), "draft_vocab_size"),
        (lambda d: d["transformer_layer_config"].update(model_type="llama"), "qwen3"),
    ],
)
def test_bad_configs_name_the_field(verifier: Path, change, message: str) -> None:
    data = config(verifier).to_dict()
    change(data)
    with pytest.raises(FormatError, match=message):
        config_from_dict(data)


def test_inspect_shows_block_mask_and_aux_layers(verifier: Path, tmp_path: Path) -> None:
    model(verifier).save_pretrained(tmp_path / "d")
    info = describe_checkpoint(tmp_path / "d")
    assert (info["method"], info["speculative_tokens"], info["block_size"]) == ("dflash", 7, 8)
    assert (info["mask_token_id"], info["aux_layer_ids"], info["target_layer_ids"]) == (MASK, AUX, [0, 3, 6])
    assert info["vllm_serve"][:4] == ["vllm", "serve", str(verifier), "--speculative-config"]
    assert json.loads(info["vllm_serve"][4]) == {
        "model": str(tmp_path / "d"),
        "method": "dflash",
        "num_speculative_tokens": 7,
    }
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["inspect", str(tmp_path / "d")]) == 0
    assert (
        "block:              8 tokens per pass (the anchor is the bonus token: at most 7 drafted), "
        "mask token 511" in out.getvalue()
    )


def test_block_mask() -> None:
    docs = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]])
    mask = block_mask(torch.tensor([[2, 6]]), docs, torch.tensor([[0, 1]]), 8, 2)[
        0, 0
    ]  # [4 queries, 8 + 4 keys]
    ctx, own = mask[:, :8].int().tolist(), mask[:, 8:].int().tolist()
    assert ctx == [[1, 1, 0, 0, 0, 0, 0, 0]] * 2 + [[0, 0, 0, 0, 1, 1, 0, 0]] * 2  # p < anchor, same doc
    assert own == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]  # its own block, both ways
    causal = block_mask(torch.tensor([[6]]), None, None, 8, 3, sliding_window=2, causal_block=True)[0, 0]
    assert causal[:, :8].int().tolist() == [[0, 0, 0, 0, 1, 1, 0, 0]] * 3
    assert causal[:, 8:].int().tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]


def _data(length: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randint(0, VOCAB - 1, (1, length), generator=g), torch.randn(
        1, length, 3 * HIDDEN, generator=g
    )


def test_a_block_sees_only_its_past_and_its_document(verifier: Path) -> None:
    m = model(verifier)
    ids, hs = _data()
    docs = torch.tensor([[0] * 12 + [1] * 12])
    base = m(ids, hs, torch.tensor([[8, 16]]), document_ids=docs)
    later = hs.clone()
    later[:, 8:12] += 5.0  # the anchor's own position and after, in its document
    later[:, 20:] += 5.0  # after the second anchor
    changed = m(ids, later, torch.tensor([[8, 16]]), document_ids=docs)
    torch.testing.assert_close(changed, base)
    other = hs.clone()
    other[:, :12] += 5.0  # the first document only
    moved = m(ids, other, torch.tensor([[8, 16]]), document_ids=docs)
    torch.testing.assert_close(moved[:, 8:], base[:, 8:])  # the second block does not see the first document
    assert not torch.allclose(moved[:, :8], base[:, :8])


def test_propose_drafts_the_block_after_the_last_token(verifier: Path) -> None:
    m = model(verifier)
    ids, hs = _data()  # propose's (shifted) layout: ids = x_1..x_{n+1}, hs = g_0..g_n
    proposal = m.propose(ids, hs)
    unshifted_ids = torch.cat([torch.zeros(1, 1, dtype=torch.long), ids], dim=1)
    unshifted_hs = torch.cat([hs, torch.zeros(1, 1, hs.shape[-1])], dim=1)
    logits = m(unshifted_ids, unshifted_hs, torch.tensor([[24]]))  # the anchor x_{n+1} at n + 1
    assert proposal.token_ids.tolist() == [logits[0, 1:].argmax(-1).tolist()]
    # Left and right padding: the same tokens after the same real prefix.
    pad_ids, pad_hs = torch.zeros(1, 5, dtype=torch.long), torch.randn(1, 5, hs.shape[-1])
    for where in ("left", "right"):
        cat = (
            (lambda a, b: torch.cat([a, b], dim=1))
            if where == "left"
            else (lambda a, b: torch.cat([b, a], dim=1))
        )
        mask = cat(torch.zeros(1, 5), torch.ones(1, 24))
        got = m.propose(cat(pad_ids, ids), cat(pad_hs, hs), attention_mask=mask).token_ids
        assert got.tolist() == proposal.token_ids.tolist(), where
    assert m.propose(ids, hs, 3).token_ids.shape == (1, 3)
    with pytest.raises(ValueError, match="drafts at most 7"):
        m.propose(ids, hs, 8)


def test_a_trained_draft_vocab_head_survives_loading_the_verifier(verifier: Path, tmp_path: Path) -> None:
    m = model(verifier, draft_vocab_size=128)
    with torch.no_grad():
        m.lm_head.weight.mul_(3.0)  # "trained": no longer the verifier's rows
    m.save_pretrained(tmp_path / "d")
    stored = set(load_file(tmp_path / "d" / "model.safetensors"))
    assert {"lm_head.weight", "d2t", "t2d", "fc.weight"} <= stored and "embed_tokens.weight" not in stored
    loaded = load_draft_model(tmp_path / "d", verifier=verifier)
    torch.testing.assert_close(loaded.lm_head.weight, m.lm_head.weight)
    ids, hs = _data()
    torch.testing.assert_close(loaded(ids, hs, torch.tensor([[10]])), m(ids, hs, torch.tensor([[10]])))
    # A full-vocabulary draft stores neither the embeddings nor the head: both are the verifier's.
    model(verifier).save_pretrained(tmp_path / "full")
    full = set(load_file(tmp_path / "full" / "model.safetensors"))
    assert not full & {"lm_head.weight", "embed_tokens.weight", "d2t", "t2d"}


def test_a_config_without_draft_vocab_size_is_the_full_vocabulary_as_vllm_reads_it(verifier: Path) -> None:
    data = config(verifier).to_dict()
    data.pop("draft_vocab_size")
    parsed = config_from_dict(data)
    assert parsed.draft_vocab_size == VOCAB and not parsed.uses_vocab_mapping


def test_dflash2_is_served_as_dflash_with_its_own_defaults(verifier: Path) -> None:
    data = config(verifier).to_dict() | {"speculators_model_type": "dflash2"}
    data.pop("sliding_window_non_causal")
    data.pop("architectures")
    data["speculators_config"]["algorithm"] = "dflash2"
    parsed = config_from_dict(data)
    assert type(parsed).__name__ == "DFlash2Config" and parsed.sliding_window_non_causal is True
    assert (parsed.conv_kernel_size, parsed.selector_top_k) == (2, 16)
    assert parsed.to_dict()["architectures"] == ["DFlash2DraftModel"]


def test_converting_a_research_checkpoint_names_what_is_missing(
    verifier: Path, tmp_path: Path, capsys
) -> None:
    from safetensors.torch import save_file

    m = model(verifier)
    src = tmp_path / "zlab"
    src.mkdir()
    layer = m.config.transformer_layer_config.model_dump(mode="json")
    (src / "config.json").write_text(
        json.dumps({**layer, "block_size": 8, "dflash_config": {"mask_token_id": MASK}})
    )
    save_file({k: v.contiguous() for k, v in m.persistent_state().items()}, str(src / "model.safetensors"))
    base = ["convert", str(src), "--verifier", str(verifier), "--algorithm", "dflash"]
    assert main([*base, "--output", str(tmp_path / "a")]) == 2
    assert "no dflash_config.target_layer_ids; pass --aux-layer-ids" in capsys.readouterr().err
    assert main([*base, "--output", str(tmp_path / "b"), "--aux-layer-ids", "1,4,7", "--validate"]) == 0
    converted = load_draft_model(tmp_path / "b", verifier=verifier)
    ids, hs = _data()
    torch.testing.assert_close(converted(ids, hs, torch.tensor([[9]])), m(ids, hs, torch.tensor([[9]])))
