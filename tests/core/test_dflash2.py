"""DFlash2 model without upstream or vLLM (the compat tier checks those): config rules that name the field,
save/load in our code, CheckpointErrors that name the tensor and the fix, the convolutions' wiring, the
candidate selector's rerank walk, and what inspect shows."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from spec_builders import HIDDEN, VOCAB, make_verifier

from speculators_core.cli.main import main
from speculators_core.format import DFlash2Config, config_from_dict, describe_checkpoint
from speculators_core.format.errors import CheckpointError, FormatError
from speculators_core.models import (
    DFlash2DraftModel,
    DFlashDraftModel,
    build_dflash2_config,
    build_dflash_config,
    load_draft_model,
)

AUX = [1, 4, 7]
MASK = VOCAB - 1


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_verifier(tmp_path_factory.mktemp("dflash2") / "verifier", arch="qwen3")


def config(verifier: Path, **kw) -> DFlash2Config:
    vc = json.loads((verifier / "config.json").read_text())
    kw = {
        "num_layers": 2,
        "block_size": 8,
        "aux_layer_ids": AUX,
        "sliding_window": None,
        "selector_rank": 8,
        "selector_top_k": 4,
        **kw,
    }
    return build_dflash2_config(vc, verifier_name_or_path=str(verifier), mask_token_id=MASK, **kw)


def model(verifier: Path, seed: int = 0, *, identity: bool = False, **kw) -> DFlash2DraftModel:
    torch.manual_seed(seed)
    m = DFlash2DraftModel(config(verifier, **kw))
    m.attach_verifier(verifier)
    if not identity:
        with torch.no_grad():
            for name, p in m.named_parameters():
                if "_conv." in name:
                    p.normal_(0.0, 0.3)  # away from the identity init, so the convolutions matter
    return m.eval()


def _data(length: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randint(0, VOCAB - 1, (1, length), generator=g), torch.randn(
        1, length, 3 * HIDDEN, generator=g
    )


def test_config_defaults_are_written_and_rules_name_the_field(verifier: Path) -> None:
    vc = json.loads((verifier / "config.json").read_text())
    c = build_dflash2_config(vc, verifier_name_or_path=str(verifier), mask_token_id=MASK)
    data = c.to_dict()
    # vLLM's DFlash2 model reads these with int(dflash_config[key]): always written, upstream's defaults.
    assert {
        k: data[k] for k in ("conv_kernel_size", "conv_group_size", "selector_rank", "selector_top_k")
    } == {
        "conv_kernel_size": 2,
        "conv_group_size": 16,
        "selector_rank": 256,
        "selector_top_k": 16,
    }
    assert data["sliding_window_non_causal"] is True and data["architectures"] == ["DFlash2DraftModel"]
    assert data["speculators_config"]["algorithm"] == "dflash2" and c.speculative_tokens == 15
    for change, message in [
        (dict(draft_vocab_size=128), "full verifier vocabulary"),
        (dict(conv_group_size=24), "conv_group_size \\(24\\) must divide the draft hidden_size \\(64\\)"),
        (dict(conv_kernel_size=17), "conv_kernel_size \\(17\\) cannot exceed block_size \\(16\\)"),
        (dict(selector_top_k=VOCAB + 1), "selector_top_k"),
    ]:
        with pytest.raises(FormatError, match=message):
            config_from_dict(data | change)
    with pytest.raises(ValueError, match="full verifier vocabulary"):
        build_dflash2_config(
            vc, verifier_name_or_path=str(verifier), mask_token_id=MASK, draft_vocab_size=128
        )


def test_a_fresh_dflash2_is_dflash_until_its_convolutions_train(verifier: Path) -> None:
    fresh = model(verifier, identity=True)
    vc = json.loads((verifier / "config.json").read_text())
    plain = DFlashDraftModel(
        build_dflash_config(
            vc,
            verifier_name_or_path=str(verifier),
            mask_token_id=MASK,
            num_layers=2,
            block_size=8,
            aux_layer_ids=AUX,
            sliding_window=None,
        )
    )
    plain.attach_verifier(verifier)
    plain.load_state_dict(
        {k: v for k, v in fresh.state_dict().items() if "_conv." not in k and "selector" not in k}
    )
    ids, hs = _data()
    anchors = torch.tensor([[4, 13]])
    # Upstream's identity init: the convolutions pass the states through unchanged.
    torch.testing.assert_close(fresh(ids, hs, anchors), plain.eval()(ids, hs, anchors))
    trained = model(verifier)  # same seed, convolutions moved off the identity
    changed = trained(ids, hs, anchors)
    assert not torch.allclose(changed, fresh(ids, hs, anchors))
    # A convolution of K = 2 taps is local and causal within its block: slot j reads slots j and j-1 (its
    # kernel comes from slot j), so perturbing slot 3 of each block changes slots 3 and 4 and nothing else.
    layer = trained.layers[0]
    x = torch.randn(1, 16, HIDDEN)
    y = x.clone()
    y[:, [3, 11]] += 1.0
    with torch.no_grad():
        before, _ = layer.attention_conv.prepare(x)
        after, _ = layer.attention_conv.prepare(y)
    changed = (after - before).abs().amax(dim=-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == [3, 4, 11, 12]
    # Slot 0 of the second block does not read the last slot of the first.
    y = x.clone()
    y[:, 7] += 1.0
    with torch.no_grad():
        after, _ = layer.attention_conv.prepare(y)
    assert ((after - before).abs().amax(dim=-1)[0] > 1e-6).nonzero().flatten().tolist() == [7]


def test_save_and_load_round_trip(verifier: Path, tmp_path: Path) -> None:
    m = model(verifier)
    with torch.no_grad():
        m.candidate_selector.predecessor_codebook.normal_(0.0, 1.0)
        m.candidate_selector.successor_codebook.normal_(0.0, 1.0)
    m.save_pretrained(tmp_path / "d")
    stored = load_file(tmp_path / "d" / "model.safetensors")
    assert not {"embed_tokens.weight", "lm_head.weight", "d2t", "t2d"} & set(stored)
    assert stored["layers.1.mlp_conv.base_kernel"].shape == (2, 2, HIDDEN)
    assert stored["layers.1.mlp_conv.kernel_projection.weight"].shape == (2 * 2 * HIDDEN // 16, HIDDEN)
    assert stored["candidate_selector.successor_codebook"].shape == (VOCAB, 8)
    assert stored["candidate_selector.hidden_projection.weight"].shape == (8, HIDDEN)
    loaded = load_draft_model(tmp_path / "d", verifier=verifier)
    assert type(loaded) is DFlash2DraftModel
    ids, hs = _data()
    anchors = torch.tensor([[6, 15]])
    torch.testing.assert_close(loaded(ids, hs, anchors), m(ids, hs, anchors))
    mine, theirs = m.propose(ids, hs), loaded.propose(ids, hs)
    assert mine.token_ids.tolist() == theirs.token_ids.tolist()
    torch.testing.assert_close(mine.logits, theirs.logits)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: s.pop("candidate_selector.successor_codebook"),
            "missing tensors \\['candidate_selector.successor_codebook'\\]: a dflash2 checkpoint stores",
        ),
        (
            lambda s: [s.pop(k) for k in list(s) if "_conv." in k or k.startswith("candidate_selector.")],
            "a plain DFlash checkpoint; set speculators_model_type to dflash",
        ),
        (
            lambda s: s.update({"layers.0.attention_conv.base_kernel": torch.zeros(2, 3, HIDDEN)}),
            "'layers.0.attention_conv.base_kernel' has shape \\[2, 3, 64\\].*set conv_kernel_size to 3",
        ),
        (
            lambda s: s.update({"layers.1.mlp_conv.kernel_projection.weight": torch.zeros(32, HIDDEN)}),
            "'layers.1.mlp_conv.kernel_projection.weight' has shape \\[32, 64\\].*set conv_group_size to 8",
        ),
        (
            lambda s: s.update({"candidate_selector.predecessor_codebook": torch.zeros(VOCAB, 4)}),
            "'candidate_selector.predecessor_codebook' has shape \\[512, 4\\].*set selector_rank to 4",
        ),
        (
            lambda s: s.update({"candidate_selector.hidden_projection.weight": torch.zeros(8, 32)}),
            "'candidate_selector.hidden_projection.weight' has shape \\[8, 32\\].*re-export the weights",
        ),
    ],
    ids=[
        "missing-codebook",
        "plain-dflash-weights",
        "conv-taps",
        "conv-groups",
        "selector-rank",
        "bad-projection",
    ],
)
def test_missing_or_misshapen_tensors_name_the_tensor_and_the_fix(
    verifier: Path, tmp_path: Path, edit, message: str
) -> None:
    model(verifier).save_pretrained(tmp_path / "d")
    weights = tmp_path / "d" / "model.safetensors"
    state = load_file(weights)
    edit(state)
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match=message):
        load_draft_model(tmp_path / "d", verifier=verifier)


def _block(m: DFlash2DraftModel, ids: torch.Tensor, hs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The drafting slots' final states [k, H] and unary logits [k, V] of propose's block."""
    states: list[torch.Tensor] = []
    hook = m.norm.register_forward_hook(lambda _m, _a, out: states.append(out[0, 1:].detach().clone()))
    m.propose(ids, hs)
    hook.remove()
    with torch.no_grad():
        return states[0], m.lm_head(states[0])


def test_the_selector_reranks_along_the_tokens_it_drafts(verifier: Path) -> None:
    m = model(verifier, seed=2, selector_top_k=2)
    ids, hs = _data()
    sel = m.candidate_selector
    with torch.no_grad():
        sel.predecessor_codebook.zero_()
        sel.successor_codebook.zero_()
    states, unary = _block(m, ids, hs)
    top = unary.topk(2, dim=-1)
    # A selector that scores nothing drafts the unary argmax.
    assert m.propose(ids, hs).token_ids[0].tolist() == unary.argmax(-1).tolist()
    (c1, c2), (d1, d2) = top.indices[0].tolist(), top.indices[1].tolist()
    anchor = int(ids[0, -1])
    assert len({anchor, c1, c2, d1, d2}) == 5  # this seed's block: the edits below do not overlap
    half = m.config.selector_rank // 2
    with torch.no_grad():
        # Slot 1 (the first drafted): an edge anchor -> c2 worth one logit more than c1's unary lead.
        sel.predecessor_codebook[anchor, :half] = 1.0
        context = sel.predecessor_codebook[anchor] * sel.hidden_projection(states[0])
        lead = top.values[0, 0] - top.values[0, 1]
        sel.successor_codebook[c2] = context * (lead + 1.0) / context.dot(context)
        # Slot 2: an edge c2 -> d2 that beats d1, on the other half of the rank, so that neither c1 (the
        # unary pick) nor the anchor as predecessor would score it.
        sel.predecessor_codebook[c2, half:] = 1.0
        context = sel.predecessor_codebook[c2] * sel.hidden_projection(states[1])
        lead = top.values[1, 0] - top.values[1, 1]
        sel.successor_codebook[d2] = context * (lead + 1.0) / context.dot(context)
    proposal = m.propose(ids, hs)
    tokens = proposal.token_ids[0].tolist()
    # The rerank changes the drafted token where the selector disagrees with the unary top-1, and the next
    # slot is scored from the token drafted (c2), not from the unary pick or the anchor (both keep d1).
    assert tokens[:2] == [c2, d2] and unary.argmax(-1)[:2].tolist() == [c1, d1]
    # The proposal's logits are the walk's scores on the top-k, -inf elsewhere (vLLM's draft logits).
    assert proposal.logits.argmax(-1)[0].tolist() == tokens
    assert torch.isfinite(proposal.logits[0]).sum(-1).tolist() == [2] * m.config.speculative_tokens
    torch.testing.assert_close(proposal.logits[0, 0, c2], top.values[0, 0] + 1.0)
    torch.testing.assert_close(proposal.logits[0, 0, c1], top.values[0, 0])


def test_inspect_shows_the_convolutions_and_the_selector(verifier: Path, tmp_path: Path) -> None:
    model(verifier).save_pretrained(tmp_path / "d")
    info = describe_checkpoint(tmp_path / "d")
    assert (info["speculators_model_type"], info["method"], info["block_size"]) == ("dflash2", "dflash", 8)
    assert (info["conv_kernel_size"], info["conv_group_size"]) == (2, 16)
    assert (info["selector_rank"], info["selector_top_k"]) == (8, 4)
    assert json.loads(info["vllm_serve"][4])["method"] == "dflash"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["inspect", str(tmp_path / "d")]) == 0
    text = out.getvalue()
    assert "block:              8 tokens per pass" in text
    assert (
        "local convolution:  2 taps around each layer's attention and MLP, one kernel per 16 channels" in text
    )
    assert "candidate selector: rank 8, reranks the unary top-4 of each drafted token" in text


def test_the_evaluator_drafts_reranked_blocks_losslessly(verifier: Path) -> None:
    """`speculators eval`'s decoder with a dflash2 draft: its steps draft the selector's walk (not the unary
    argmax), and the output stays the verifier's own greedy continuation."""
    from speculators_core.data.features import VerifierFeatures, load_verifier
    from speculators_core.eval.simulate import AcceptanceStats, SpecDecoder

    draft = model(verifier)
    with torch.no_grad():
        draft.candidate_selector.predecessor_codebook.normal_(0.0, 1.0)
        draft.candidate_selector.successor_codebook.normal_(0.0, 1.0)
    unary: list[list[int]] = []
    drafted: list[list[int]] = []
    draft.lm_head.register_forward_hook(lambda _m, _a, out: unary.append(out[0].argmax(-1).tolist()))
    propose = draft.propose

    def recording(ids: torch.Tensor, hidden: torch.Tensor, k: int):
        proposal = propose(ids, hidden, k)
        drafted.append(proposal.token_ids[0].tolist())
        return proposal

    draft.propose = recording  # type: ignore[method-assign]
    verifier_model = load_verifier(verifier, device="cpu")
    decoder = SpecDecoder(verifier_model, draft, VerifierFeatures(verifier_model, AUX), k=7)
    stats = AcceptanceStats(7)
    prompt = [5, 17, 42, 99, 3, 250, 8]
    out = decoder.generate(prompt, 20, stats)
    reference = verifier_model.generate(
        torch.tensor([prompt]), max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    assert out == reference[0, len(prompt) :].tolist()
    assert stats.drafts == len(drafted) == len(unary) > 0
    assert drafted != unary  # the selector reranked some drafted token
