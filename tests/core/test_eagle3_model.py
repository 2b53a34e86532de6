"""EAGLE-3 draft model: TTT semantics against an independent reference, drafting, gradients, save/load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from reference import eagle3_autoregressive, eagle3_unroll
from safetensors import safe_open
from spec_builders import AUX_IDS, VOCAB, inputs, tiny_eagle3

from speculators_core.format.errors import CheckpointError, IncompatibleError
from speculators_core.models import Eagle3DraftModel, VerifierHead, load_draft_model
from speculators_core.models.base import default_position_ids

torch.set_grad_enabled(True)


def _docs(batch: int, length: int) -> torch.Tensor:
    docs = torch.zeros(batch, length, dtype=torch.long)
    docs[0, length // 2 :] = 1  # two packed documents in row 0
    docs[-1, -3:] = -1  # padding at the end of the last row
    return docs


VARIANTS = [
    pytest.param({}, id="defaults"),
    pytest.param({"norm_before_residual": False, "norm_output": False, "norm_before_fc": False}, id="plain"),
    pytest.param({"norm_before_fc": False, "fc_norm": True}, id="fc_norm"),
    pytest.param({"num_layers": 2}, id="two-layers"),
    pytest.param({"draft_vocab_size": None}, id="full-vocab"),
    pytest.param({"draft_arch": "qwen3"}, id="qwen3"),
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_ttt_unroll_matches_reference(verifier_dir: Path, variant: dict, impl: str) -> None:
    model = tiny_eagle3(verifier_dir, **variant)
    model.attn_implementation = impl
    ids, hs = inputs(model, batch=2, length=12)
    docs = _docs(2, 12)
    pos = default_position_ids(docs, 2, 12, ids.device)
    with torch.no_grad():
        got = model(ids, hs, ttt_steps=3, document_ids=docs, position_ids=pos).logits
        want = eagle3_unroll(model, ids, hs, 3, docs, pos)
    assert len(got) == 3
    for step, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.shape == (2, 12, model.draft_vocab_size)
        real = docs != -1  # padding rows are never scored
        torch.testing.assert_close(g[real], w[real], atol=2e-5, rtol=1e-4, msg=f"step {step}")


def test_sliding_window_layers(verifier_dir: Path) -> None:
    model = tiny_eagle3(verifier_dir, sliding_window=4)
    ids, hs = inputs(model, batch=1, length=12)
    docs = torch.zeros(1, 12, dtype=torch.long)
    pos = default_position_ids(docs, 1, 12, ids.device)
    with torch.no_grad():
        got = model(ids, hs, ttt_steps=2).logits
        want = eagle3_unroll(model, ids, hs, 2, docs, pos, window=4)
        full = eagle3_unroll(model, ids, hs, 2, docs, pos, window=None)
    torch.testing.assert_close(got[1], want[1], atol=2e-5, rtol=1e-4)
    assert not torch.allclose(got[1][:, 6:], full[1][:, 6:], atol=1e-4)  # the window really applies


def test_padding_equals_unpadded(verifier_dir: Path) -> None:
    """A right-padded batch gives the same logits as each sequence alone on the rows that are scored (step s
    feeds input_ids[t + s], so the last s rows of a sequence see padding instead of upstream's zeros)."""
    model = tiny_eagle3(verifier_dir)
    ids, hs = inputs(model, batch=2, length=10)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0
    with torch.no_grad():
        batched = model(ids, hs, ttt_steps=3, attention_mask=mask).logits
        alone = model(ids[1:, :7], hs[1:, :7], ttt_steps=3).logits
    for s in range(3):
        torch.testing.assert_close(batched[s][1, : 7 - s], alone[s][0, : 7 - s], atol=2e-5, rtol=1e-4)


def test_default_positions_restart_per_document() -> None:
    docs = torch.tensor([[0, 0, 0, 1, 1, -1]])
    assert default_position_ids(docs, 1, 6, docs.device).tolist() == [[1, 2, 3, 1, 2, 1]]
    assert default_position_ids(None, 1, 3, docs.device).tolist() == [[1, 2, 3]]


@pytest.mark.parametrize(
    "variant", [{}, {"norm_output": False, "norm_before_residual": False}, {"num_layers": 2}]
)
def test_propose_equals_plain_autoregressive_decoding(verifier_dir: Path, variant: dict) -> None:
    """The TTT diagonal layout is exactly autoregressive drafting: compare with a cache-free decoder."""
    model = tiny_eagle3(verifier_dir, **variant)
    ids, hs = inputs(model, batch=1, length=9, seed=3)
    with torch.no_grad():
        proposal = model.propose(ids, hs, 4)
        simulated = model(ids, hs, ttt_steps=4, feed="draft")
    want = eagle3_autoregressive(model, ids, hs, 4)
    assert proposal.token_ids[0].tolist() == want
    assert [int(d[0, -1]) for d in simulated.draft_ids] == want
    assert proposal.logits.shape == (1, 4, model.draft_vocab_size)


def test_propose_with_left_and_right_padding(verifier_dir: Path) -> None:
    model = tiny_eagle3(verifier_dir)
    ids, hs = inputs(model, batch=1, length=8, seed=5)
    with torch.no_grad():
        alone = model.propose(ids, hs, 3).token_ids
        pad_ids = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
        pad_hs = torch.cat([hs, torch.randn(1, 3, hs.shape[-1])], 1)
        right = model.propose(
            pad_ids, pad_hs, 3, attention_mask=(torch.arange(11) < 8).long()[None]
        ).token_ids
        left_ids = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
        left_hs = torch.cat([torch.randn(1, 3, hs.shape[-1]), hs], 1)
        left_mask = (torch.arange(11) >= 3).long()[None]
        pos = (left_mask.cumsum(1)).clamp(min=1)
        left = model.propose(left_ids, left_hs, 3, attention_mask=left_mask, position_ids=pos).token_ids
    assert right.tolist() == alone.tolist()
    assert left.tolist() == alone.tolist()


def test_draft_ids_are_verifier_ids(verifier_dir: Path) -> None:
    model = tiny_eagle3(verifier_dir)
    ids, hs = inputs(model)
    with torch.no_grad():
        out = model(ids, hs, ttt_steps=2)
    mapped = out.logits[0].argmax(-1) + model.d2t[out.logits[0].argmax(-1)]
    assert torch.equal(out.draft_ids[0], mapped)
    assert bool(model.t2d[out.draft_ids[0]].all())


def test_gradients_flow_through_steps(verifier_dir: Path) -> None:
    model = tiny_eagle3(verifier_dir)
    ids, hs = inputs(model)
    out = model(ids, hs, ttt_steps=3)
    out.logits[2].float().logsumexp(-1).mean().backward()
    assert model.embed_tokens.weight.grad is None  # frozen verifier copy
    assert model.fc.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0
    assert model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_training_reduces_loss(verifier_dir: Path) -> None:
    """A few optimizer steps on fixed targets lower the per-step loss: the unroll is trainable as is."""
    model = tiny_eagle3(verifier_dir)
    ids, hs = inputs(model, batch=2, length=16)
    targets = torch.randint(0, model.draft_vocab_size, (2, 16))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)

    def loss_fn() -> torch.Tensor:
        logits = model(ids, hs, ttt_steps=2).logits
        return sum(
            torch.nn.functional.cross_entropy(
                lg[:, : 16 - s].reshape(-1, lg.shape[-1]), targets[:, s:].reshape(-1)
            )
            for s, lg in enumerate(logits)
        )

    first = float(loss_fn().detach())
    for _ in range(15):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    assert float(loss_fn().detach()) < first - 0.5


def test_verifier_head_matches_transformers(verifier_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = tiny_eagle3(verifier_dir)
    verifier = AutoModelForCausalLM.from_pretrained(verifier_dir)
    ids = torch.randint(0, VOCAB, (1, 7))
    captured: list[torch.Tensor] = []
    # The last layer's output before the final norm: what vLLM's extract_hidden_states captures.
    verifier.model.norm.register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
    with torch.no_grad():
        out = verifier(ids)
        head = VerifierHead.from_verifier(verifier_dir, t2d=model.t2d)
        got = head(captured[0])
    torch.testing.assert_close(got, out.logits[..., model.t2d], atol=1e-5, rtol=1e-5)


def test_save_load_round_trip(verifier_dir: Path, tmp_path: Path) -> None:
    model = tiny_eagle3(verifier_dir, num_layers=2)
    model.save_pretrained(tmp_path / "draft")
    files = sorted(p.name for p in (tmp_path / "draft").iterdir())
    assert files == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "draft" / "config.json").read_text())
    assert "model_type" not in config
    assert config["norm_before_residual"] is True and config["dtype"] == "float32"
    assert config["eagle_aux_hidden_state_layer_ids"] == AUX_IDS
    with safe_open(tmp_path / "draft" / "model.safetensors", "pt") as fh:
        assert fh.metadata() == {"format": "pt"}
        assert fh.get_tensor("d2t").dtype == torch.int64 and fh.get_tensor("t2d").dtype == torch.bool
        names = set(fh.keys())
    assert {"embed_tokens.weight", "fc.weight", "layers.1.self_attn.q_proj.weight", "lm_head.weight"} <= names
    assert not any("rotary" in n for n in names)
    loaded = load_draft_model(tmp_path / "draft")
    assert isinstance(loaded, Eagle3DraftModel)
    ids, hs = inputs(model)
    with torch.no_grad():
        for a, b in zip(model(ids, hs, ttt_steps=3).logits, loaded(ids, hs, ttt_steps=3).logits, strict=True):
            assert torch.equal(a, b)


def test_full_vocab_draft_has_no_mapping(verifier_dir: Path, tmp_path: Path) -> None:
    model = tiny_eagle3(verifier_dir, draft_vocab_size=None)
    model.save_pretrained(tmp_path / "d")
    with safe_open(tmp_path / "d" / "model.safetensors", "pt") as fh:
        assert not {"d2t", "t2d"} & set(fh.keys())


def test_bfloat16_load_keeps_rotary_in_float32(verifier_dir: Path, tmp_path: Path) -> None:
    model = tiny_eagle3(verifier_dir).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    loaded = Eagle3DraftModel.from_pretrained(tmp_path / "bf16")
    assert loaded.fc.weight.dtype == torch.bfloat16
    assert loaded.rotary_emb.inv_freq.dtype == torch.float32
    assert loaded.d2t.dtype == torch.int64
    ids, hs = inputs(loaded)
    assert torch.isfinite(loaded(ids, hs, ttt_steps=2).logits[1].float()).all()


def test_missing_embeddings_need_the_verifier(verifier_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    model = tiny_eagle3(verifier_dir, verifier_ref="org/not-local")
    model.save_pretrained(tmp_path / "d")
    weights = tmp_path / "d" / "model.safetensors"
    state = load_file(weights)
    del state["embed_tokens.weight"]
    save_file(state, weights, metadata={"format": "pt"})
    bare = Eagle3DraftModel.from_pretrained(tmp_path / "d")
    assert bare.needs_verifier()
    ids, hs = inputs(bare)
    with pytest.raises(CheckpointError, match="embed_tokens"):
        bare(ids, hs)
    with pytest.raises(CheckpointError, match="attach_verifier"):
        bare.save_pretrained(tmp_path / "again")
    assert not (tmp_path / "again").exists()
    attached = Eagle3DraftModel.from_pretrained(tmp_path / "d", verifier=verifier_dir)
    with torch.no_grad():
        torch.testing.assert_close(attached(ids, hs).logits[0], model(ids, hs).logits[0])


def test_hidden_width_error_names_the_sizes(verifier_dir: Path) -> None:
    model = tiny_eagle3(verifier_dir)
    ids, _ = inputs(model)
    with pytest.raises(ValueError, match="3 aux layers x verifier hidden size 64"):
        model(ids, torch.randn(2, 12, 100))


def _corrupt(directory: Path, how: str) -> None:
    from safetensors.torch import load_file, save_file

    weights = directory / "model.safetensors"
    config_path = directory / "config.json"
    state = load_file(weights)
    config = json.loads(config_path.read_text())
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[:-64])
        return
    if how == "unexpected":
        state["layers.0.extra.weight"] = torch.zeros(2)
    elif how == "missing":
        del state["layers.0.hidden_norm.weight"]
    elif how == "shape":
        state["fc.weight"] = torch.zeros(64, 100)
    elif how == "draft-vocab":
        config["draft_vocab_size"] = 100
    elif how == "t2d-count":
        state["t2d"][~state["t2d"]] = True
    elif how == "only-d2t":
        del state["t2d"]
    elif how == "vocab":
        config["transformer_layer_config"]["vocab_size"] = 600
    save_file(state, str(weights), metadata={"format": "pt"})
    config_path.write_text(json.dumps(config))


CORRUPTIONS = [
    ("truncated", CheckpointError, r"model\.safetensors: truncated"),
    ("unexpected", CheckpointError, r"unexpected tensors \['layers.0.extra.weight'\]"),
    ("missing", CheckpointError, r"missing tensors \['layers.0.hidden_norm.weight'\]"),
    ("shape", CheckpointError, r"'fc.weight' has shape \[64, 100\], config.json implies \[64, 192\]"),
    ("draft-vocab", CheckpointError, "d2t has 128 entries but config.json draft_vocab_size is 100"),
    ("t2d-count", CheckpointError, "t2d marks 512 tokens, draft_vocab_size is 128"),
    ("only-d2t", CheckpointError, "has only one of d2t/t2d"),
    ("vocab", IncompatibleError, "embed_tokens.weight has 512 rows but transformer_layer_config.vocab_size"),
]


@pytest.mark.parametrize(("how", "exc", "message"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_bad_checkpoints_fail_with_one_clear_error(
    verifier_dir: Path, tmp_path: Path, how: str, exc: type[Exception], message: str
) -> None:
    tiny_eagle3(verifier_dir).save_pretrained(tmp_path / "d")
    _corrupt(tmp_path / "d", how)
    with pytest.raises(exc, match=message):
        load_draft_model(tmp_path / "d")


def test_wrong_verifier_on_load_is_incompatible(verifier_dir: Path, tmp_path: Path) -> None:
    from spec_builders import make_verifier

    model = tiny_eagle3(verifier_dir)
    model.save_pretrained(tmp_path / "d")
    other = make_verifier(tmp_path / "wide", hidden_size=96, head_dim=24)
    loaded = Eagle3DraftModel.from_pretrained(tmp_path / "d")
    with pytest.raises(IncompatibleError, match="does not fit this verifier"):
        loaded.attach_verifier(other)
