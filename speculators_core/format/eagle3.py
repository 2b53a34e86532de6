"""EAGLE-3 config (`speculators_model_type: eagle3`), as upstream 0.9.0 writes it and vLLM 0.33 reads it.

`transformer_layer_config` is the draft decoder's Hugging Face config (`model_type` llama or qwen3, the only
draft layers vLLM has) and its `vocab_size` is the VERIFIER's vocabulary: vLLM sizes `embed_tokens` and the
logit scatter from it. `norm_before_residual` is always written because vLLM assumes True when it is absent
while upstream's default is False.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from speculators_core.format.envelope import SpeculatorModelConfig
from speculators_core.format.registry import register_speculator_type

EAGLE3_LAYER_TYPES = ("llama", "qwen3")
DEFAULT_NUM_AUX_LAYERS = 3  # vLLM and upstream assume three aux layers when the ids are not recorded


class DraftLayerConfig(BaseModel):
    """The draft decoder's HF config. Only the fields that shape weights are typed; every other key is kept
    verbatim and written back unchanged (defaults are never added)."""

    model_config = ConfigDict(extra="allow")

    model_type: str
    vocab_size: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    num_hidden_layers: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_key_value_heads: int | None = Field(default=None, ge=1)
    head_dim: int | None = Field(default=None, ge=1)
    rms_norm_eps: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _heads_divide(self) -> DraftLayerConfig:
        kv = self.num_key_value_heads or self.num_attention_heads
        if self.num_attention_heads % kv:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({kv})"
            )
        return self

    @model_serializer(mode="wrap")
    def _only_given(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set or k in (self.model_extra or {})}

    def to_hf_dict(self) -> dict[str, Any]:
        """The dict handed to `transformers.AutoConfig.for_model` (torch side)."""
        return self.model_dump(mode="json")


class DraftShape:
    """What configs with a transformer_layer_config, draft_vocab_size and target_hidden_size derive from
    them (a plain mixin: pydantic fields stay on the models)."""

    @property
    def hidden_size(self) -> int:
        return self.transformer_layer_config.hidden_size  # type: ignore[attr-defined]

    @property
    def verifier_hidden_size(self) -> int:
        """Width of one aux hidden state: `target_hidden_size`, else the draft's hidden size."""
        return self.target_hidden_size or self.hidden_size  # type: ignore[attr-defined]

    @property
    def uses_vocab_mapping(self) -> bool:
        """Whether `d2t`/`t2d` exist (upstream and vLLM omit them for a full-vocabulary draft)."""
        return self.draft_vocab_size != self.transformer_layer_config.vocab_size  # type: ignore[attr-defined]

    def vocab_sizes(self) -> tuple[int | None, int | None]:
        return self.transformer_layer_config.vocab_size, self.draft_vocab_size  # type: ignore[attr-defined]


class Eagle3LayerConfig(DraftLayerConfig):
    model_type: Literal["llama", "qwen3"]


@register_speculator_type(
    "eagle3",
    method="eagle3",
    vllm_serves=True,
    has_model=True,
    description="EAGLE-3 (multi-layer fusion, TTT)",
)
class Eagle3Config(DraftShape, SpeculatorModelConfig):
    """EAGLE-3 draft: fc over the verifier's aux hidden states, decoder layers, draft-vocab lm_head."""

    default_architectures: ClassVar[list[str]] = ["Eagle3DraftModel"]

    speculators_model_type: Literal["eagle3"] = "eagle3"
    transformer_layer_config: Eagle3LayerConfig
    draft_vocab_size: int = Field(ge=1)
    norm_before_residual: bool
    target_hidden_size: int | None = Field(default=None, ge=1)
    eagle_aux_hidden_state_layer_ids: list[int] | None = None
    norm_before_fc: bool = False
    fc_norm: bool = False
    norm_output: bool = False
    embed_requires_grad: bool = False

    @field_validator("eagle_aux_hidden_state_layer_ids")
    @classmethod
    def _distinct_ids(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not value:
            raise ValueError(
                "must list at least one verifier layer id, or be null for the default [2, n//2, n-3]"
            )
        if any(i < 0 for i in value) or len(set(value)) != len(value):
            raise ValueError(f"layer ids must be distinct and >= 0 (got {value})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Eagle3Config:
        if self.norm_before_fc and self.fc_norm:
            raise ValueError("norm_before_fc and fc_norm are mutually exclusive; set one of them to false")
        vocab = self.transformer_layer_config.vocab_size
        if self.draft_vocab_size > vocab:
            raise ValueError(
                f"draft_vocab_size ({self.draft_vocab_size}) cannot exceed the verifier vocabulary "
                f"transformer_layer_config.vocab_size ({vocab})"
            )
        return self

    @property
    def num_aux_layers(self) -> int:
        ids = self.eagle_aux_hidden_state_layer_ids
        return len(ids) if ids else DEFAULT_NUM_AUX_LAYERS
