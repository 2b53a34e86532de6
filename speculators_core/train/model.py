"""The draft model for a verifier: config from the verifier's, vocabulary mapping, borrowed weights.

EAGLE-3 follows upstream's choices: embed_tokens is the verifier's (frozen), lm_head starts from the
verifier's rows of the draft vocabulary and stays frozen (unless `train_lm_head`), norm_before_residual /
norm_before_fc / norm_output on. EAGLE-1/HASS (`eagle`) borrows both embed_tokens and lm_head from the
verifier (the format never stores them) over the full vocabulary; HASS's fusion bias is on by default.
DFlash follows upstream's recipe (speculators_core.models.build_dflash_config): the verifier's embeddings
and lm_head borrowed (its draft-vocabulary rows for a reduced head), the MASK token the verifier
vocabulary's last id unless given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from speculators_core.models import (
    DFlashDraftModel,
    DraftModel,
    Eagle3DraftModel,
    EagleDraftModel,
    build_dflash_config,
    build_eagle3_config,
    build_eagle_config,
)


def build_draft(
    verifier_tensors: dict[str, torch.Tensor],
    verifier_config: dict[str, Any],
    *,
    verifier_name: str,
    layer_ids: Sequence[int],
    num_layers: int,
    speculative_tokens: int,
    draft_vocab_size: int,
    d2t: torch.Tensor | None,
    t2d: torch.Tensor | None,
    algorithm: str = "eagle3",
    fusion_bias: bool = True,
    attn_impl: str = "sdpa",
    train_lm_head: bool = False,
    seed: int = 42,
    block_size: int = 16,
    mask_token_id: int | None = None,
) -> DraftModel:
    """`verifier_tensors`: the verifier's `embed` and `lm_head` (loaded once by the caller)."""
    model: DraftModel
    if algorithm == "eagle":
        eagle_config = build_eagle_config(
            verifier_config,
            verifier_name_or_path=verifier_name,
            speculative_tokens=speculative_tokens,
            fusion_bias=fusion_bias,
        )
        # Same initial weights on every rank and in every resumed run, whatever ran before.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = EagleDraftModel(eagle_config, attn_implementation=attn_impl)  # type: ignore[arg-type]
        model.set_verifier_weights(verifier_tensors["embed"], verifier_tensors["lm_head"])
        return model
    if algorithm == "dflash":
        dflash_config = build_dflash_config(
            verifier_config,
            verifier_name_or_path=verifier_name,
            # The last id of Llama 3 / Qwen3 vocabularies is a reserved token no text produces.
            mask_token_id=int(verifier_config["vocab_size"]) - 1 if mask_token_id is None else mask_token_id,
            num_layers=num_layers,
            block_size=block_size,
            draft_vocab_size=draft_vocab_size,
            aux_layer_ids=list(layer_ids),
            speculative_tokens=speculative_tokens,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            dflash = DFlashDraftModel(dflash_config, attn_implementation=attn_impl)  # type: ignore[arg-type]
        if d2t is not None:
            dflash.set_vocab_mapping(d2t, t2d)
        dflash.set_verifier_tensors(verifier_tensors["embed"], verifier_tensors["lm_head"])
        dflash.lm_head.weight.requires_grad_(train_lm_head and dflash.d2t is not None)
        return dflash
    config = build_eagle3_config(
        verifier_config,
        verifier_name_or_path=verifier_name,
        num_layers=num_layers,
        draft_vocab_size=draft_vocab_size,
        aux_layer_ids=list(layer_ids),
        speculative_tokens=speculative_tokens,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        eagle3 = Eagle3DraftModel(config, attn_implementation=attn_impl)  # type: ignore[arg-type]
    if d2t is not None:
        eagle3.set_vocab_mapping(d2t, t2d)
    eagle3.set_embeddings(verifier_tensors["embed"])
    eagle3.init_lm_head(verifier_tensors["lm_head"])
    eagle3.embed_tokens.weight.requires_grad_(bool(config.embed_requires_grad))
    eagle3.lm_head.weight.requires_grad_(train_lm_head)
    return eagle3
