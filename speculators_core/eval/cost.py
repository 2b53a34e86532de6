"""A simple cost model of speculative decoding.

One verification step drafts k tokens (k draft forward passes) and verifies them in one verifier pass,
which costs about one decode step while decoding is memory-bound. It yields `mean_accept_len` tokens
(accepted drafts + the verifier's bonus token). With c = cost of a draft pass / cost of a verifier pass:

    speed-up = mean_accept_len / (1 + k * c)

c defaults to the ratio of the per-token FLOPs (2 x parameters touched per token, embeddings excluded,
lm_heads included), which tracks the weight bytes read per token in the memory-bound regime.
"""

from __future__ import annotations

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
    """2 x the draft's parameters used per token (embed_tokens is a lookup: excluded)."""
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("embed_tokens"))
    return 2.0 * params


def expected_speedup(mean_accept_len: float, k: int, cost_ratio: float) -> float:
    return mean_accept_len / (1.0 + k * cost_ratio)
