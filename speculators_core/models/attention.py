"""Attention for drafting and train-time test (TTT), without flex-attention (CPU-friendly).

Layout of one TTT unroll over T positions (upstream speculators 0.9.0 semantics):

* step 0 keys/values cover all T positions; a query at position t sees step-0 keys t' <= t of the same
  document (and within the sliding window, for sliding layers);
* step s >= 1 adds one key/value per position; a query at t sees, besides the step-0 keys above, the
  keys of steps 1..s *at the same position t only* (the diagonal). Those are the keys of the tokens the
  draft already proposed after position t, so the pattern equals autoregressive drafting with a KV cache.

A query always sees its own step-0 key, so a padding row never softmaxes over nothing.

Two kernels compute the same numbers:
* "sdpa": torch's fused scaled_dot_product_attention over the concatenated keys with a dense
  [B, 1, R, T + s*R] mask (upstream's non-flex layout);
* "eager": scores over the step-0 keys plus one extra score per later step (the diagonal), one softmax;
  memory O(R*T + s*R) instead of O(R*(T + s*R)).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

AttnImpl = Literal["sdpa", "eager"]
ATTN_IMPLS: tuple[str, ...] = ("sdpa", "eager")


def document_ids_from(
    attention_mask: torch.Tensor | None, document_ids: torch.Tensor | None, batch: int, length: int
) -> torch.Tensor | None:
    """Per-position document ids ([B, T], -1 = padding) from a padding mask and/or packed document ids."""
    if document_ids is None and attention_mask is None:
        return None
    if document_ids is None:
        assert attention_mask is not None
        document_ids = torch.zeros(batch, length, dtype=torch.long, device=attention_mask.device)
    if attention_mask is not None:
        document_ids = torch.where(attention_mask.bool(), document_ids, torch.full_like(document_ids, -1))
    return document_ids


def step0_mask(
    length: int,
    document_ids: torch.Tensor | None,
    sliding_window: int | None,
    device: torch.device,
    rows: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Boolean [B|1, 1, R, T] mask over step-0 keys (True = attend); None means plain causal over all rows.

    rows: [B] (one query row per sequence) or None (all T rows).
    """
    if document_ids is None and sliding_window is None and rows is None:
        return None
    kv = torch.arange(length, device=device)
    q = kv[:, None] if rows is None else rows.to(device)[:, None, None]  # [T, 1] or [B, 1, 1]
    allowed = kv <= q
    if sliding_window is not None:
        allowed = allowed & (kv > q - sliding_window)
    if document_ids is not None:
        if rows is None:
            q_doc = document_ids[:, :, None]  # [B, T, 1]
        else:
            q_doc = document_ids.gather(1, rows[:, None].to(document_ids.device))[:, :, None]  # [B, 1, 1]
        same = (q_doc == document_ids[:, None, :]) & (q_doc != -1)
        allowed = allowed & same
    allowed = allowed | (kv == q)
    if allowed.dim() == 2:
        allowed = allowed[None]
    return allowed[:, None]  # [B|1, 1, R, T]


def ttt_attention(
    query: torch.Tensor,
    keys: list[torch.Tensor],
    values: list[torch.Tensor],
    mask: torch.Tensor | None,
    scale: float,
    impl: AttnImpl = "sdpa",
) -> torch.Tensor:
    """Attention of one TTT step.

    query: [B, Hq, R, D]; keys[0]/values[0]: [B, Hkv, T, D] (step 0); keys[j]/values[j] for j >= 1:
    [B, Hkv, R, D] (the diagonal of step j); mask: step0_mask(...) or None (causal, R == T).
    Returns [B, Hq, R, D].
    """
    if impl == "sdpa":
        return _sdpa(query, keys, values, mask, scale)
    if impl == "eager":
        return _eager(query, keys, values, mask, scale)
    raise ValueError(f"attention implementation {impl!r} is not supported; allowed: {', '.join(ATTN_IMPLS)}")


def _sdpa(
    query: torch.Tensor,
    keys: list[torch.Tensor],
    values: list[torch.Tensor],
    mask: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    gqa = query.shape[1] != keys[0].shape[1]
    if len(keys) == 1:
        return F.scaled_dot_product_attention(
            query, keys[0], values[0], attn_mask=mask, is_causal=mask is None, scale=scale, enable_gqa=gqa
        )
    rows, length = query.shape[2], keys[0].shape[2]
    if mask is None:
        idx = torch.arange(length, device=query.device)
        mask = (idx[None, :] <= idx[:, None])[None, None]
    diag = torch.eye(rows, dtype=torch.bool, device=query.device).expand(mask.shape[0], 1, rows, rows)
    full_mask = torch.cat([mask.expand(-1, -1, rows, length), *([diag] * (len(keys) - 1))], dim=-1)
    return F.scaled_dot_product_attention(
        query,
        torch.cat(keys, dim=2),
        torch.cat(values, dim=2),
        attn_mask=full_mask,
        scale=scale,
        enable_gqa=gqa,
    )


def _eager(
    query: torch.Tensor,
    keys: list[torch.Tensor],
    values: list[torch.Tensor],
    mask: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    batch, q_heads, rows, dim = query.shape
    kv_heads, length = keys[0].shape[1], keys[0].shape[2]
    groups = q_heads // kv_heads
    # Group query heads under their kv head instead of repeating keys (no copy of K/V).
    q = query.view(batch, kv_heads, groups, rows, dim)
    scores = torch.matmul(q, keys[0].unsqueeze(2).transpose(-1, -2)) * scale  # [B, Hkv, G, R, T]
    if mask is None:
        idx = torch.arange(length, device=query.device)
        mask = (idx[None, :] <= idx[:, None])[None, None]
    scores = scores.masked_fill(~mask.unsqueeze(2), float("-inf"))
    diag = [(q * k.unsqueeze(2)).sum(-1, keepdim=True) * scale for k in keys[1:]]  # [B, Hkv, G, R, 1] each
    if diag:
        scores = torch.cat([scores, *diag], dim=-1)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(probs[..., :length], values[0].unsqueeze(2))
    for j, v in enumerate(values[1:]):
        out = out + probs[..., length + j : length + j + 1] * v.unsqueeze(2)
    return out.reshape(batch, q_heads, rows, dim)
