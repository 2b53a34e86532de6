"""An independent, naive implementation of the EAGLE-3 / EAGLE-1 TTT unroll, written from upstream
speculators 0.9.0's semantics (dense [T, (s+1)T] mask from its mask_mod, eager attention, explicit loops).
It reads the model's weights by name only, so it checks the module code, not itself."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """x [B, h, T, d], pos [B, T]."""
    d = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float) / d))
    ang = pos[..., None].float() * inv  # [B, T, d/2]
    cos, sin = torch.cat([ang, ang], -1).cos()[:, None], torch.cat([ang, ang], -1).sin()[:, None]
    rot = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], -1)
    return x * cos + rot * sin


def upstream_mask(docs: torch.Tensor, T: int, steps: int, window: int | None) -> torch.Tensor:
    """[B, T, (steps+1)*T] bool, from upstream's create_combined_mask_mod (or(and(causal, doc), diagonal))."""
    B = docs.shape[0]
    q = torch.arange(T)[:, None]
    kv = torch.arange((steps + 1) * T)[None, :]
    causal = q >= kv
    if window is not None:
        causal = causal & (kv > q - window)
    dq = docs[:, :, None]
    dk = docs[:, kv[0] % T][:, None, :]
    document = (dq != -1) & (dq == dk)
    diagonal = (kv % T) == q
    return (causal[None] & document) | diagonal[None].expand(B, -1, -1)


def attention(
    p: dict, pre: str, x: torch.Tensor, pos: torch.Tensor, kv_cache: list, mask: torch.Tensor, cfg: dict
) -> torch.Tensor:
    B, T, _ = x.shape
    h, kvh = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    d = cfg.get("head_dim") or cfg["hidden_size"] // h
    q = (x @ p[pre + "q_proj.weight"].T).view(B, T, h, d)
    k = (x @ p[pre + "k_proj.weight"].T).view(B, T, kvh, d)
    v = (x @ p[pre + "v_proj.weight"].T).view(B, T, kvh, d)
    if pre + "q_norm.weight" in p:
        q = rms(q, p[pre + "q_norm.weight"], cfg["rms_norm_eps"])
        k = rms(k, p[pre + "k_norm.weight"], cfg["rms_norm_eps"])
    theta = cfg.get("rope_parameters", {}).get("rope_theta", 10000.0)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    q, k = rope(q, pos, theta), rope(k, pos, theta)
    kv_cache.append((k, v))
    K = torch.cat([c[0] for c in kv_cache], 2).repeat_interleave(h // kvh, 1)
    V = torch.cat([c[1] for c in kv_cache], 2).repeat_interleave(h // kvh, 1)
    scores = q @ K.transpose(-1, -2) / math.sqrt(d)
    scores = scores.masked_fill(~mask[:, None, :, : K.shape[2]], float("-inf"))
    out = torch.softmax(scores, -1) @ V
    return out.transpose(1, 2).reshape(B, T, h * d) @ p[pre + "o_proj.weight"].T


def mlp(p: dict, pre: str, x: torch.Tensor) -> torch.Tensor:
    return (F.silu(x @ p[pre + "gate_proj.weight"].T) * (x @ p[pre + "up_proj.weight"].T)) @ p[
        pre + "down_proj.weight"
    ].T


def eagle3_unroll(
    model,
    ids: torch.Tensor,
    hs: torch.Tensor,
    steps: int,
    docs: torch.Tensor,
    pos: torch.Tensor,
    window: int | None = None,
) -> list[torch.Tensor]:
    """Upstream's Eagle3DraftModel.forward (teacher forcing), returning per-step logits."""
    p = {k: v.detach() for k, v in model.state_dict().items()}
    c = model.config
    cfg = c.transformer_layer_config.model_dump()
    eps = cfg.get("rms_norm_eps") or 1e-6
    B, T = ids.shape
    n_layers = cfg["num_hidden_layers"]
    x = hs
    if "input_norm.weight" in p:
        x = rms(x, p["input_norm.weight"], eps)
    if "fc_norm.0.weight" in p:
        chunks = x.chunk(c.num_aux_layers, -1)
        x = torch.cat([rms(ch, p[f"fc_norm.{i}.weight"], eps) for i, ch in enumerate(chunks)], -1)
    hidden = x @ p["fc.weight"].T
    mask = upstream_mask(docs, T, steps - 1, window)
    caches: list[list] = [[] for _ in range(n_layers)]
    cur_ids = ids
    out = []
    for s in range(steps):
        emb = p["embed_tokens.weight"][cur_ids]
        step_mask = mask[:, :, : (s + 1) * T]
        # layer 0
        residual = hidden
        e = rms(emb, p["layers.0.input_layernorm.weight"], eps)
        hn = rms(hidden, p["layers.0.hidden_norm.weight"], eps)
        if c.norm_before_residual:
            residual = hn
        a = attention(p, "layers.0.self_attn.", torch.cat([e, hn], -1), pos + s, caches[0], step_mask, cfg)
        x = residual + a
        x = x + mlp(p, "layers.0.mlp.", rms(x, p["layers.0.post_attention_layernorm.weight"], eps))
        for i in range(1, n_layers):
            pre = f"layers.{i}."
            a = attention(
                p,
                pre + "self_attn.",
                rms(x, p[pre + "input_layernorm.weight"], eps),
                pos + s,
                caches[i],
                step_mask,
                cfg,
            )
            x = x + a
            x = x + mlp(p, pre + "mlp.", rms(x, p[pre + "post_attention_layernorm.weight"], eps))
        normed = rms(x, p["norm.weight"], eps)
        out.append(normed @ p["lm_head.weight"].T)
        hidden = normed if c.norm_output else x
        cur_ids = torch.cat([ids[:, s + 1 :], ids.new_zeros(B, s + 1)], 1)
    return out


def eagle3_autoregressive(model, ids: torch.Tensor, hs: torch.Tensor, k: int) -> list[int]:
    """Greedy drafting as a plain causal model, recomputed from scratch each token (no cache, no TTT
    masks): the sequence grows by (draft token, draft's own state) pairs. One sequence (B = 1)."""
    p = {kk: v.detach() for kk, v in model.state_dict().items()}
    c = model.config
    cfg = c.transformer_layer_config.model_dump()
    eps = cfg.get("rms_norm_eps") or 1e-6
    x = hs
    if "input_norm.weight" in p:
        x = rms(x, p["input_norm.weight"], eps)
    fused = x @ p["fc.weight"].T  # [1, T, H]
    tokens = ids[0].tolist()
    states = [fused[0, t] for t in range(fused.shape[1])]
    drafted: list[int] = []
    d2t = p.get("d2t")
    for _ in range(k):
        n = len(tokens)
        tok = torch.tensor([tokens])
        hid = torch.stack(states)[None]
        pos = torch.arange(1, n + 1)[None]
        mask = torch.ones(1, n, n, dtype=torch.bool).tril()
        e = rms(p["embed_tokens.weight"][tok], p["layers.0.input_layernorm.weight"], eps)
        hn = rms(hid, p["layers.0.hidden_norm.weight"], eps)
        residual = hn if c.norm_before_residual else hid
        y = residual + attention(p, "layers.0.self_attn.", torch.cat([e, hn], -1), pos, [], mask, cfg)
        y = y + mlp(p, "layers.0.mlp.", rms(y, p["layers.0.post_attention_layernorm.weight"], eps))
        for i in range(1, cfg["num_hidden_layers"]):
            pre = f"layers.{i}."
            y = y + attention(
                p, pre + "self_attn.", rms(y, p[pre + "input_layernorm.weight"], eps), pos, [], mask, cfg
            )
            y = y + mlp(p, pre + "mlp.", rms(y, p[pre + "post_attention_layernorm.weight"], eps))
        normed = rms(y, p["norm.weight"], eps)
        best = int((normed[0, -1] @ p["lm_head.weight"].T).argmax())
        target = best + int(d2t[best]) if d2t is not None else best
        drafted.append(target)
        tokens.append(target)
        states.append((normed if c.norm_output else y)[0, -1])
    return drafted


def eagle1_unroll(
    model, ids: torch.Tensor, hs: torch.Tensor, steps: int, docs: torch.Tensor, pos: torch.Tensor
) -> list[torch.Tensor]:
    """EAGLE-1/HASS with the same TTT layout: fusion_fc(cat(emb, hidden)) -> one layer -> lm_head."""
    p = {k: v.detach() for k, v in model.state_dict().items()}
    c = model.config
    cfg = c.transformer_layer_config.model_dump()
    eps = cfg.get("rms_norm_eps") or 1e-6
    B, T = ids.shape
    mask = upstream_mask(docs, T, steps - 1, None)
    cache: list = []
    hidden, cur_ids, out = hs, ids, []
    for s in range(steps):
        emb = p["embed_tokens.weight"][cur_ids]
        if c.layernorms:
            emb = rms(emb, p["embedding_layernorm.weight"], eps)
        x = torch.cat([emb, hidden], -1) @ p["fusion_fc.weight"].T
        if c.fusion_bias:
            x = x + p["fusion_fc.bias"]
        h_in = rms(x, p["transformer.input_layernorm.weight"], eps) if c.layernorms else x
        x = x + attention(p, "transformer.self_attn.", h_in, pos + s, cache, mask[:, :, : (s + 1) * T], cfg)
        x = x + mlp(p, "transformer.mlp.", rms(x, p["transformer.post_attention_layernorm.weight"], eps))
        o = rms(x, p["pre_lm_head_layernorm.weight"], eps) if c.layernorms else x
        out.append(o @ p["lm_head.weight"].T)
        hidden = x
        cur_ids = torch.cat([ids[:, s + 1 :], ids.new_zeros(B, s + 1)], 1)
    return out
