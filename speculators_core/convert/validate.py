"""Load a written checkpoint with our loader and run it on inputs shaped by the verifier config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from speculators_core.convert.common import Verifier
from speculators_core.format.errors import CheckpointError
from speculators_core.models import DFlashDraftModel, Eagle3DraftModel, EagleDraftModel, load_draft_model


def validate_checkpoint(
    directory: Path, verifier: Verifier, *, seq_len: int = 16, seed: int = 0
) -> dict[str, Any]:
    """Load `directory`, fill verifier-borrowed tensors (or random ones, reported), run a TTT forward and a
    drafting pass; CheckpointError if anything fails or produces non-finite logits."""
    model = load_draft_model(directory, dtype=torch.float32)
    # EAGLE-1 always borrows from the verifier (the config's, when local); EAGLE-3 stores its embeddings.
    borrowed = "verifier weights" if isinstance(model, EagleDraftModel) else "stored in the checkpoint"
    if model.needs_verifier():
        embed, head = verifier.tensor("embed"), verifier.tensor("lm_head")
        if isinstance(model, EagleDraftModel):
            if embed is not None and head is not None:
                model.set_verifier_weights(embed, head)
                borrowed = "verifier weights"
            else:
                model.set_verifier_weights(
                    torch.randn_like(model.embed_tokens.weight), torch.randn_like(model.lm_head.weight)
                )
                borrowed = f"random (verifier weights not readable: {verifier.unavailable_reason})"
        elif isinstance(model, Eagle3DraftModel):
            model.set_embeddings(embed if embed is not None else torch.randn_like(model.embed_tokens.weight))
            borrowed = "verifier embeddings" if embed is not None else "random embeddings"
    if isinstance(model, DFlashDraftModel):
        return _validate_dflash(directory, model, verifier, seq_len, seed)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    vocab = int(model.vocab_size)
    width = model.fc.in_features if isinstance(model, Eagle3DraftModel) else model.hidden_size
    input_ids = torch.randint(0, vocab, (1, seq_len), generator=gen)
    hidden = torch.randn(1, seq_len, width, generator=gen)
    steps = max(1, int(model.config.speculative_tokens))
    with torch.no_grad():
        out = model(input_ids, hidden, ttt_steps=steps)
        proposal = model.propose(input_ids, hidden, steps)
    for i, logits in enumerate(out.logits):
        if tuple(logits.shape) != (1, seq_len, model.draft_vocab_size):
            raise CheckpointError(f"{directory}: step {i} logits have shape {list(logits.shape)}")
        if not torch.isfinite(logits).all():
            raise CheckpointError(
                f"{directory}: step {i} produced non-finite logits; the weights are corrupt"
            )
    if int(proposal.token_ids.max()) >= vocab or int(proposal.token_ids.min()) < 0:
        raise CheckpointError(f"{directory}: drafted token ids fall outside the verifier vocabulary")
    return {
        "ok": True,
        "ttt_steps": steps,
        "seq_len": seq_len,
        "hidden_width": width,
        "borrowed_tensors": borrowed,
        "draft_tokens": proposal.token_ids[0].tolist(),
    }


def _validate_dflash(
    directory: Path, model: DFlashDraftModel, verifier: Verifier, seq_len: int, seed: int
) -> dict[str, Any]:
    """A block forward at a few anchors and one drafted block, on random states of the verifier's shape."""
    borrowed = "stored in the checkpoint"
    if model.needs_verifier():
        embed, head = verifier.tensor("embed"), verifier.tensor("lm_head")
        if embed is not None and head is not None:
            model.set_verifier_tensors(embed, head)
            borrowed = "verifier weights"
        else:
            model.set_verifier_tensors(
                torch.randn_like(model.embed_tokens.weight),
                torch.randn(model.vocab_size, model.config.hidden_size),
            )
            borrowed = f"random (verifier weights not readable: {verifier.unavailable_reason})"
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    length = max(seq_len, model.block_size + 2)
    input_ids = torch.randint(0, model.vocab_size, (1, length), generator=gen)
    hidden = torch.randn(1, length, model.fc.in_features, generator=gen)
    anchors = torch.tensor([[1, length - model.block_size]])
    with torch.no_grad():
        logits = model(input_ids, hidden, anchors)
        proposal = model.propose(input_ids, hidden)
    if (
        tuple(logits.shape) != (1, 2 * model.block_size, model.draft_vocab_size)
        or not torch.isfinite(logits).all()
    ):
        raise CheckpointError(f"{directory}: block logits {list(logits.shape)} are malformed or non-finite")
    if int(proposal.token_ids.max()) >= model.vocab_size or int(proposal.token_ids.min()) < 0:
        raise CheckpointError(f"{directory}: drafted token ids fall outside the verifier vocabulary")
    return {
        "ok": True,
        "block_size": model.block_size,
        "seq_len": length,
        "hidden_width": model.fc.in_features,
        "borrowed_tensors": borrowed,
        "draft_tokens": proposal.token_ids[0].tolist(),
    }
