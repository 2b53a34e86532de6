"""EAGLE-1 / EAGLE-2 / HASS draft model (legacy speculators format `eagle`, upstream 0.1–0.4).

Weights stored by the format:
    fusion_fc.weight [H, 2H] (+ fusion_fc.bias [H] for HASS)
    transformer.self_attn.{q,k,v,o}_proj.weight, transformer.mlp.{gate,up,down}_proj.weight,
    transformer.post_attention_layernorm.weight
    with layernorms=True also: embedding_layernorm.weight, transformer.input_layernorm.weight,
    pre_lm_head_layernorm.weight
Borrowed from the verifier (never saved): embed_tokens.weight [V, H], lm_head.weight [V, H].

One step: x = transformer(fusion_fc(cat(embedding_layernorm(embed(ids)), hidden))); logits =
lm_head(pre_lm_head_layernorm(x)); the next step is fed x (the predicted feature), as EAGLE/HASS do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from speculators_core.format.eagle import EagleConfig
from speculators_core.format.envelope import SpeculatorsConfig
from speculators_core.format.errors import CheckpointError, IncompatibleError
from speculators_core.models.attention import AttnImpl
from speculators_core.models.base import DraftModel
from speculators_core.models.eagle3 import draft_layer_config
from speculators_core.models.layers import DecoderLayer, LayerCache, RMSNorm, StepContext
from speculators_core.models.verifier import load_verifier_tensors


class EagleDraftModel(DraftModel):
    """EAGLE-1/HASS draft; same `forward` (TTT unroll) and `propose` as EAGLE-3, logits over the verifier
    vocabulary (the lm_head is the verifier's)."""

    config_class: ClassVar[type[EagleConfig]] = EagleConfig
    verifier_owned: ClassVar[tuple[str, ...]] = ("embed_tokens.weight", "lm_head.weight")
    config: EagleConfig

    def __init__(self, config: EagleConfig, *, attn_implementation: AttnImpl = "sdpa") -> None:
        super().__init__(config, attn_implementation=attn_implementation)
        lc = self.layer_config
        hidden = config.hidden_size
        self.vocab_size = config.transformer_layer_config.vocab_size
        self.draft_vocab_size = self.vocab_size
        self.hidden_size = hidden
        self.embed_tokens = nn.Embedding(self.vocab_size, hidden)
        self.lm_head = nn.Linear(hidden, self.vocab_size, bias=False)
        self.embed_tokens.weight.requires_grad_(False)
        self.lm_head.weight.requires_grad_(False)
        self.embedding_layernorm = RMSNorm(hidden, eps=lc.rms_norm_eps) if config.layernorms else None
        self.fusion_fc = nn.Linear(2 * hidden, hidden, bias=config.fusion_bias)
        self.transformer = DecoderLayer(lc, 0, input_layernorm=config.layernorms)
        self.pre_lm_head_layernorm = RMSNorm(hidden, eps=lc.rms_norm_eps) if config.layernorms else None
        self.verifier_attached = False
        std = getattr(lc, "initializer_range", 0.02)
        for module in (self.fusion_fc, *self.transformer.modules()):
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _fuse(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.shape[-1] != self.hidden_size:
            raise ValueError(
                f"hidden_states last dim is {hidden_states.shape[-1]}, expected the verifier hidden size "
                f"{self.hidden_size}"
            )
        return hidden_states.to(self.fusion_fc.weight.dtype)

    def _step(
        self, input_ids: torch.Tensor, hidden: torch.Tensor, ctx: StepContext, caches: list[LayerCache]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.verifier_attached:
            raise CheckpointError(
                "EAGLE-1/HASS drafts use the verifier's embeddings and lm_head: load with verifier=... "
                "or call attach_verifier(path) first"
            )
        embeds = self.embed_tokens(input_ids)
        if self.embedding_layernorm is not None:
            embeds = self.embedding_layernorm(embeds)
        x = self.transformer(self.fusion_fc(torch.cat([embeds, hidden], dim=-1)), ctx, caches[0])
        out = self.pre_lm_head_layernorm(x) if self.pre_lm_head_layernorm is not None else x
        return self.lm_head(out), x

    @property
    def num_cache_layers(self) -> int:
        return 1  # the single decoder layer lives under `transformer` (its weight names)

    def needs_verifier(self) -> bool:
        return not self.verifier_attached

    def set_verifier_weights(self, embed: torch.Tensor, lm_head: torch.Tensor) -> None:
        for name, tensor, module in (
            ("embeddings", embed, self.embed_tokens),
            ("lm_head", lm_head, self.lm_head),
        ):
            if tuple(tensor.shape) != tuple(module.weight.shape):
                raise IncompatibleError(
                    f"verifier {name} have shape {list(tensor.shape)}, the draft expects "
                    f"{list(module.weight.shape)} "
                    "(vocab_size x hidden_size); the draft does not fit this verifier"
                )
        with torch.no_grad():
            self.embed_tokens.weight.copy_(embed.to(self.embed_tokens.weight.dtype))
            self.lm_head.weight.copy_(lm_head.to(self.lm_head.weight.dtype))
        self.verifier_attached = True

    def attach_verifier(self, verifier: str | os.PathLike[str], *, revision: str | None = None) -> None:
        tensors = load_verifier_tensors(verifier, ["embed", "lm_head"], revision=revision)
        self.set_verifier_weights(tensors["embed"], tensors["lm_head"])


def build_eagle_config(
    verifier_config: Mapping[str, Any],
    *,
    verifier_name_or_path: str,
    speculative_tokens: int = 3,
    fusion_bias: bool = True,
    layernorms: bool = False,
    draft_arch: str = "llama",
) -> EagleConfig:
    """An EagleConfig (one decoder layer shaped after the verifier) for training. The default is HASS's
    layout (fusion_fc with a bias, no extra layernorms); fusion_bias=False gives EAGLE-1/2's."""
    vc = dict(verifier_config)
    return EagleConfig(
        transformer_layer_config=draft_layer_config(vc, num_layers=1, draft_arch=draft_arch),  # type: ignore[arg-type]
        layernorms=layernorms,
        fusion_bias=fusion_bias,
        speculators_config=SpeculatorsConfig.greedy(
            "eagle", speculative_tokens, verifier_name_or_path, vc.get("architectures")
        ),
    )
