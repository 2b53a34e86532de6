"""The shared DFlash/DFlash2 compat case: a tiny Qwen3 layer shape, aux layers, the MASK token, and one packed
row of two documents with anchored blocks, saved for upstream's snippets to read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from spec_builders import HIDDEN, VOCAB

T = 40
AUX = [1, 4, 7]
MASK = VOCAB - 1
LAYER = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
)
ANCHORS = [2, 9, 17, 21, 23]  # all in the first document (ends at 26); 21 and 23 run into the second


def inputs(path: Path) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    data = {
        "input_ids": torch.randint(0, VOCAB - 1, (1, T), generator=g),
        "hidden_states": torch.randn(1, T, len(AUX) * HIDDEN, generator=g),
        "document_ids": torch.tensor([[0] * 26 + [1] * 14]),  # two packed documents
        "anchors": torch.tensor(ANCHORS),
    }
    save_file(data, str(path))
    return data


def block_logits(model: Any, data: dict[str, torch.Tensor]) -> torch.Tensor:
    """Our block logits at the anchors, in upstream's layout."""
    with torch.no_grad():
        return model(
            data["input_ids"],
            data["hidden_states"],
            data["anchors"][None],
            document_ids=data["document_ids"],
            position_ids=torch.arange(T)[None],  # upstream's positions: the packed row's index
        )
