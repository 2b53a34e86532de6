"""A simple cost model of speculative decoding, and the acceptance arithmetic built on it.

One verification step drafts k tokens (k draft forward passes) and verifies them in one verifier pass,
which costs about one decode step while decoding is memory-bound. It yields `mean_accept_len` tokens
(accepted drafts + the verifier's bonus token). With c = cost of a draft pass / cost of a verifier pass:

    speed-up = mean_accept_len / (1 + k * c)

c defaults to the ratio of the per-token FLOPs (2 x parameters touched per token, embeddings excluded,
lm_heads included), which tracks the weight bytes read per token in the memory-bound regime.

Per-position rates follow vLLM's counters: p_i = (steps that accepted more than i drafts) / drafts. Drafts
are proposed as a chain, so the first j drafts of a k-token proposal are the j-token proposal: the mean
acceptance length at any j <= k is 1 + p_0 + ... + p_{j-1}, read off one measurement at k. The conditional
rate q_i = p_i / p_{i-1} is the chance that position i is accepted given that all before it were.

Torch-free: the operator imports this module (the promotion gate and the choice of k use it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def per_token_flops_verifier(config: dict[str, Any]) -> float:
    """2 x (decoder parameters + lm_head), from a Llama-like config (GQA, gated MLP)."""
    h = int(config["hidden_size"])
    n_layers = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or h // heads)
    inter = int(config["intermediate_size"])
    attn = h * head_dim * (heads + 2 * kv) + heads * head_dim * h
    mlp = 3 * h * inter
    return 2.0 * (n_layers * (attn + mlp) + h * int(config["vocab_size"]))


def per_token_flops_draft(model: Any) -> float:
    """2 x the draft's parameters used per token (embed_tokens and DFlash2's selector codebooks are row
    lookups, 1 + top-k rows per token, not matmuls: excluded)."""
    params = sum(
        p.numel()
        for n, p in model.named_parameters()
        if not n.startswith("embed_tokens") and not n.endswith("_codebook")
    )
    return 2.0 * params


def expected_speedup(mean_accept_len: float, k: int, cost_ratio: float, *, parallel: bool = False) -> float:
    """Tokens per verifier step over its cost: k sequential draft passes (EAGLE), or one pass for the
    whole block (DFlash: `parallel`; a decode pass of a few tokens costs what one token does)."""
    return mean_accept_len / (1.0 + (1 if parallel else k) * cost_ratio)


def _clip01(value: float) -> float:
    return min(1.0, max(0.0, float(value)))


def acceptance_length_by_k(per_pos: Sequence[float]) -> list[float]:
    """Mean acceptance length at k = 1..len(per_pos): 1 + p_0 + ... + p_{k-1}."""
    out, total = [], 1.0
    for p in per_pos:
        total += _clip01(p)
        out.append(total)
    return out


def conditional_rates(per_pos: Sequence[float]) -> list[float]:
    """q_i = p_i / p_{i-1} (p_{-1} = 1); 0 after a position nothing reached."""
    out, before = [], 1.0
    for p in per_pos:
        p = min(_clip01(p), before)  # rates cannot grow with depth; clip measurement noise
        out.append(p / before if before > 0 else 0.0)
        before = p
    return out


def per_position_from_conditional(cond: Sequence[float]) -> list[float]:
    """Inverse of conditional_rates: p_i = q_0 * ... * q_i."""
    out, run = [], 1.0
    for q in cond:
        run *= _clip01(q)
        out.append(run)
    return out


def speedup_by_k(per_pos: Sequence[float], cost_ratio: float, *, parallel: bool = False) -> list[float]:
    """Expected speed-up at k = 1..len(per_pos) under the cost model."""
    return [
        expected_speedup(length, k, cost_ratio, parallel=parallel)
        for k, length in enumerate(acceptance_length_by_k(per_pos), 1)
    ]


def best_k(per_pos: Sequence[float], cost_ratio: float, k_min: int = 1, k_max: int | None = None) -> int:
    """The k in [k_min, k_max] with the highest expected speed-up (the smaller k on ties)."""
    table = speedup_by_k(per_pos, cost_ratio)
    hi = min(len(table), k_max or len(table))
    if hi < k_min:
        return k_min
    return max(range(k_min, hi + 1), key=lambda k: (table[k - 1], -k))
