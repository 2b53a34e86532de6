"""Legacy EAGLE-1/EAGLE-2/HASS config (`speculators_model_type: eagle`), as upstream 0.1–0.4 wrote it.

EAGLE-1/2: layernorms=False, fusion_bias=False; HASS: fusion_bias=True (HASS checkpoints with the extra
norms set layernorms=True). vLLM 0.33 cannot serve this type; it is kept so published checkpoints still
load and can be inspected, evaluated or fine-tuned.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from speculators_core.format.eagle3 import DraftLayerConfig
from speculators_core.format.envelope import SpeculatorModelConfig
from speculators_core.format.registry import register_speculator_type


class EagleLayerConfig(DraftLayerConfig):
    model_type: Literal["llama", "qwen3"]


@register_speculator_type(
    "eagle",
    method="eagle",
    vllm_serves=False,
    has_model=True,
    description="EAGLE-1/EAGLE-2/HASS (legacy; vLLM 0.33 cannot serve it)",
)
class EagleConfig(SpeculatorModelConfig):
    """One decoder layer over fusion_fc(cat(embed, hidden)); embeddings and lm_head come from the verifier."""

    default_architectures: ClassVar[list[str]] = ["EagleSpeculator"]

    speculators_model_type: Literal["eagle"] = "eagle"
    transformer_layer_architecture: str = "auto"
    transformer_layer_config: EagleLayerConfig
    layernorms: bool = Field(
        default=False,
        description="embedding_layernorm, transformer.input_layernorm and pre_lm_head_layernorm exist",
    )
    fusion_bias: bool = Field(default=False, description="fusion_fc has a bias (HASS)")

    @property
    def hidden_size(self) -> int:
        return self.transformer_layer_config.hidden_size

    def vocab_sizes(self) -> tuple[int | None, int | None]:
        vocab = self.transformer_layer_config.vocab_size
        return vocab, vocab
