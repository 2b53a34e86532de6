"""EAGLE-1 / HASS draft model: unroll against the reference, verifier-borrowed tensors, save/load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from reference import eagle1_unroll
from safetensors import safe_open
from spec_builders import inputs, tiny_eagle

from speculators_core.format.errors import CheckpointError
from speculators_core.models import EagleDraftModel, load_draft_model
from speculators_core.models.base import default_position_ids


@pytest.mark.parametrize(("fusion_bias", "layernorms"), [(False, False), (True, False), (True, True)])
def test_unroll_matches_reference(verifier_dir: Path, fusion_bias: bool, layernorms: bool) -> None:
    model = tiny_eagle(verifier_dir, fusion_bias=fusion_bias, layernorms=layernorms)
    ids, hs = inputs(model, batch=2, length=10)
    docs = torch.zeros(2, 10, dtype=torch.long)
    docs[1, 6:] = 1
    pos = default_position_ids(docs, 2, 10, ids.device)
    with torch.no_grad():
        got = model(ids, hs, ttt_steps=3, document_ids=docs).logits
        want = eagle1_unroll(model, ids, hs, 3, docs, pos)
    for g, w in zip(got, want, strict=True):
        assert g.shape == (2, 10, model.vocab_size)
        torch.testing.assert_close(g, w, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("layernorms", [False, True])
def test_save_load_round_trip(verifier_dir: Path, tmp_path: Path, layernorms: bool) -> None:
    model = tiny_eagle(verifier_dir, fusion_bias=True, layernorms=layernorms)
    model.save_pretrained(tmp_path / "d")
    with safe_open(tmp_path / "d" / "model.safetensors", "pt") as fh:
        names = set(fh.keys())
    assert "embed_tokens.weight" not in names and "lm_head.weight" not in names
    assert "fusion_fc.bias" in names
    assert ("transformer.input_layernorm.weight" in names) == layernorms
    assert ("embedding_layernorm.weight" in names) == layernorms
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert config["speculators_model_type"] == "eagle" and config["fusion_bias"] is True
    loaded = load_draft_model(tmp_path / "d")  # verifier taken from config.json (a local directory)
    assert isinstance(loaded, EagleDraftModel) and not loaded.needs_verifier()
    ids, hs = inputs(model)
    with torch.no_grad():
        for a, b in zip(model(ids, hs, ttt_steps=2).logits, loaded(ids, hs, ttt_steps=2).logits, strict=True):
            assert torch.equal(a, b)


def test_without_verifier_forward_explains(verifier_dir: Path, tmp_path: Path) -> None:
    model = tiny_eagle(verifier_dir)
    model.config.speculators_config.verifier.name_or_path = "org/remote-verifier"
    model.save_pretrained(tmp_path / "d")
    bare = EagleDraftModel.from_pretrained(tmp_path / "d")
    ids, hs = inputs(bare)
    with pytest.raises(CheckpointError, match="verifier's embeddings and lm_head"):
        bare(ids, hs)
    bare.attach_verifier(verifier_dir)
    with torch.no_grad():
        torch.testing.assert_close(bare(ids, hs).logits[0], model(ids, hs).logits[0])


def test_propose_matches_draft_feed(verifier_dir: Path) -> None:
    model = tiny_eagle(verifier_dir, fusion_bias=True)
    ids, hs = inputs(model, batch=1, length=8)
    with torch.no_grad():
        p = model.propose(ids, hs, 3)
        sim = model(ids, hs, ttt_steps=3, feed="draft")
    assert p.token_ids[0].tolist() == [int(d[0, -1]) for d in sim.draft_ids]
