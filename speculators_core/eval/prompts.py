"""Evaluation prompts: the held-out split of prepare-data, or the first user turn(s) of a raw dataset.

A prompt is everything before the first assistant token (what the verifier sees when it starts its
first reply), so prompts carry the chat template's generation prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from speculators_core.data.errors import InputError
from speculators_core.data.prepare import META
from speculators_core.data.store import TokenStore


def prompts_from_prepared(directory: Path, split: str, max_samples: int | None) -> list[list[int]]:
    store = TokenStore(directory / split)
    prompts: list[list[int]] = []
    for i in range(len(store)):
        ids, mask = store[i]
        first = int(np.argmax(mask > 0)) if mask.any() else 0
        if first > 0:
            prompts.append(ids[:first].tolist())
        if max_samples is not None and len(prompts) >= max_samples:
            break
    return prompts


def prompts_from_source(src: str, tokenizer: Any, max_samples: int | None) -> list[list[int]]:
    from speculators_core.data.loading import iter_rows

    prompts: list[list[int]] = []
    for row in iter_rows(src):
        if row.messages is None:
            continue
        first = next(i for i, m in enumerate(row.messages) if m["role"] == "assistant")
        enc = tokenizer.apply_chat_template(
            row.messages[:first], tokenize=True, add_generation_prompt=True, return_dict=True
        )
        prompts.append(list(enc["input_ids"]))
        if max_samples is not None and len(prompts) >= max_samples:
            break
    return prompts


def load_prompts(
    data: str, tokenizer: Any, *, split: str = "heldout", max_samples: int | None = None
) -> list[list[int]]:
    path = Path(data)
    if (path / META).exists():
        prompts = prompts_from_prepared(path, split, max_samples)
    else:
        prompts = prompts_from_source(data, tokenizer, max_samples)
    if not prompts:
        raise InputError(
            f"--data {data}: no evaluation prompt found (held-out split empty?); add data or lower --holdout"
        )
    return prompts
