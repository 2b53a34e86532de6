"""Draft vocabulary: the `draft_vocab_size` most frequent verifier tokens under the loss mask.

Same rule as upstream speculators (so the same data gives the same mapping): rank token ids by
(-frequency, id), take the top `draft_vocab_size`, pad with the lowest unused ids when fewer tokens were
seen, sort ascending; `d2t[i] = selected[i] - i` (int64 offsets), `t2d` bool over the verifier vocabulary.
"""

from __future__ import annotations

import numpy as np
import torch

from speculators_core.data.errors import InputError


def build_vocab_mapping(token_freq: np.ndarray, draft_vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    vocab_size = int(token_freq.shape[0])
    if not 1 <= draft_vocab_size <= vocab_size:
        raise InputError(
            f"--draft-vocab-size {draft_vocab_size} must be in [1, {vocab_size}] (the verifier vocabulary)"
        )
    freq = np.asarray(token_freq, dtype=np.int64)
    seen = np.flatnonzero(freq > 0)
    # lexsort sorts by the last key first: frequency descending, then id ascending.
    ranked = seen[np.lexsort((seen, -freq[seen]))]
    selected = list(ranked[:draft_vocab_size])
    if len(selected) < draft_vocab_size:
        taken = set(selected)
        for tid in range(vocab_size):
            if tid not in taken:
                selected.append(tid)
                if len(selected) == draft_vocab_size:
                    break
    ids = torch.tensor(sorted(int(t) for t in selected), dtype=torch.long)
    d2t = ids - torch.arange(draft_vocab_size, dtype=torch.long)
    t2d = torch.zeros(vocab_size, dtype=torch.bool)
    t2d[ids] = True
    return d2t, t2d


def coverage(token_freq: np.ndarray, t2d: torch.Tensor) -> float:
    """Share of masked training tokens that the draft vocabulary can produce."""
    total = int(token_freq.sum())
    return float(token_freq[t2d.numpy()].sum()) / total if total else 0.0
