"""Decoder building blocks in the shape of transformers' modeling_llama.py / modeling_qwen3.py.

Parameter names match Hugging Face (self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj, input_layernorm,
post_attention_layernorm, qwen3's self_attn.{q,k}_norm), so draft weights load in vLLM and upstream
speculators unchanged. Attention goes through `attention.ttt_attention` (sdpa or eager, no flex).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, PretrainedConfig
from transformers.activations import ACT2FN
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from speculators_core.models.attention import AttnImpl, ttt_attention


def hf_layer_config(layer_config: dict[str, Any]) -> PretrainedConfig:
    """The transformers config object of a draft layer config dict (fills HF defaults, as vLLM does)."""
    data = {k: v for k, v in layer_config.items() if k != "transformers_version"}
    layers, types = data.get("num_hidden_layers"), data.get("layer_types")
    if isinstance(types, list) and isinstance(layers, int) and len(types) > layers:
        # Upstream's DFlash configs keep the verifier's layer_types (one per verifier layer); only the
        # first num_hidden_layers describe draft layers, and transformers refuses the longer list.
        data["layer_types"] = types[:layers]
    return AutoConfig.for_model(**data)


class RMSNorm(nn.Module):
    """LlamaRMSNorm: computed in float32, scaled by `weight` in the input dtype."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


def rotary_embedding(config: PretrainedConfig) -> nn.Module:
    """HF's rotary module (handles every rope_type: default, llama3, yarn, ...); buffers are not saved."""
    return LlamaRotaryEmbedding(config)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return (q * cos) + (_rotate_half(q) * sin), (k * cos) + (_rotate_half(k) * sin)


@dataclass
class LayerCache:
    """Keys/values of one layer across TTT steps: index 0 holds step 0 (all positions), then one per step."""

    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)


@dataclass
class StepContext:
    """What every layer needs for one step: rotary cos/sin, masks per attention type, kernel."""

    cos: torch.Tensor
    sin: torch.Tensor
    full_mask: torch.Tensor | None
    sliding_mask: torch.Tensor | None
    impl: AttnImpl


class MLP(nn.Module):
    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        bias = bool(getattr(config, "mlp_bias", False))
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def head_dim_of(config: PretrainedConfig) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def is_sliding_layer(config: PretrainedConfig, layer_idx: int) -> bool:
    layer_types = getattr(config, "layer_types", None) or []
    window = getattr(config, "sliding_window", None)
    return bool(window) and layer_idx < len(layer_types) and layer_types[layer_idx] == "sliding_attention"


class Attention(nn.Module):
    """Multi-head attention with GQA; qwen3 adds per-head q_norm/k_norm before rotary."""

    def __init__(self, config: PretrainedConfig, layer_idx: int, input_size: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.head_dim = head_dim_of(config)
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.scaling = self.head_dim**-0.5
        self.sliding = is_sliding_layer(config, layer_idx)
        bias = bool(getattr(config, "attention_bias", False))
        self.q_proj = nn.Linear(input_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(input_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(input_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)
        self.q_norm: RMSNorm | None = None
        self.k_norm: RMSNorm | None = None
        if config.model_type == "qwen3":
            self.q_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def forward(self, hidden_states: torch.Tensor, ctx: StepContext, cache: LayerCache) -> torch.Tensor:
        batch, rows, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(batch, rows, self.num_heads, self.head_dim)
        k = self.k_proj(hidden_states).view(batch, rows, self.num_kv_heads, self.head_dim)
        v = self.v_proj(hidden_states).view(batch, rows, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = apply_rotary(q, k, ctx.cos, ctx.sin)
        cache.keys.append(k)
        cache.values.append(v)
        mask = ctx.sliding_mask if self.sliding else ctx.full_mask
        out = ttt_attention(q, cache.keys, cache.values, mask, self.scaling, ctx.impl)
        return self.o_proj(out.transpose(1, 2).reshape(batch, rows, self.num_heads * self.head_dim))


class DecoderLayer(nn.Module):
    """A standard pre-norm Llama/Qwen3 decoder layer. `input_layernorm=False` replaces it by identity
    (EAGLE-1 without layernorms has no such weight)."""

    def __init__(self, config: PretrainedConfig, layer_idx: int, *, input_layernorm: bool = True) -> None:
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = Attention(config, layer_idx, self._attn_input_size(config))
        self.mlp = MLP(config)
        self.input_layernorm: nn.Module = (
            RMSNorm(config.hidden_size, eps=config.rms_norm_eps) if input_layernorm else nn.Identity()
        )
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def _attn_input_size(self, config: PretrainedConfig) -> int:
        return int(config.hidden_size)

    def _mlp_block(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        return residual + hidden_states

    def forward(self, hidden_states: torch.Tensor, ctx: StepContext, cache: LayerCache) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.self_attn(self.input_layernorm(hidden_states), ctx, cache)
        return self._mlp_block(residual + hidden_states)


class Eagle3FirstLayer(DecoderLayer):
    """EAGLE-3's first layer: attention over cat(input_layernorm(embeds), hidden_norm(hidden)) (2H wide).

    The residual is the raw hidden state, or its normed value when `norm_before_residual`.
    """

    def __init__(self, config: PretrainedConfig, layer_idx: int, *, norm_before_residual: bool) -> None:
        super().__init__(config, layer_idx)
        self.norm_before_residual = norm_before_residual
        self.hidden_norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def _attn_input_size(self, config: PretrainedConfig) -> int:
        return 2 * int(config.hidden_size)

    def forward_pair(
        self, embeds: torch.Tensor, hidden: torch.Tensor, ctx: StepContext, cache: LayerCache
    ) -> torch.Tensor:
        residual = hidden
        embeds = self.input_layernorm(embeds)
        hidden = self.hidden_norm(hidden)
        if self.norm_before_residual:
            residual = hidden
        attn = self.self_attn(torch.cat([embeds, hidden], dim=-1), ctx, cache)
        return self._mlp_block(residual + attn)
