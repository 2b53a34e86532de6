"""The draft model for a verifier: config from the verifier's, vocabulary mapping, borrowed weights.

EAGLE-3 follows upstream's choices: embed_tokens is the verifier's (frozen), lm_head starts from the
verifier's rows of the draft vocabulary and stays frozen (unless `train_lm_head`), norm_before_residual /
norm_before_fc / norm_output on. EAGLE-1/HASS (`eagle`) borrows both embed_tokens and lm_head from the
verifier (the format never stores them) over the full vocabulary; HASS's fusion bias is on by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from speculators_core.models import (
    DraftModel,
    Eagle3DraftModel,
    EagleDraftModel,
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
