"""DFlash configs (`speculators_model_type` dflash and dflash2), as upstream 0.9.0 writes them and vLLM 0.33
reads them.

A DFlash draft is a small Qwen3-style decoder that predicts a whole block `[anchor, MASK, ...]` in one
non-causal pass, conditioned on the fused hidden states of several verifier layers, and reuses the
verifier's embeddings and lm_head (a full-vocabulary draft stores neither).

Facts that shape the file (upstream `models/dflash/config.py`, vLLM `configs/speculators/algos.py`):
- `aux_hidden_state_layer_ids` index the verifier's `hidden_states` tuple (0 = embeddings, i = output of
  decoder layer i-1); vLLM's DFlash model takes `target_layer_ids = [i - 1 for i in aux]`. vLLM raises a
  bare KeyError when the ids or `mask_token_id` are missing, so both are required here.
- `sliding_window_non_causal` defaults to False upstream but vLLM assumes True when it is absent: always
  written (like eagle3's `norm_before_residual`).
- `sample_from_anchor: false` (upstream's default and what vLLM serves) drafts `block_size - 1` tokens
  per block; true drafts `block_size`. `proposal_methods[0].speculative_tokens` may not exceed that.
- `dflash2` adds grouped local convolutions and a candidate selector and is served as `method: dflash`.
  vLLM's DFlash2 model reads the four conv/selector keys with `int(dflash_config[key])` and its updater
  copies only keys that are set, so they are always written (a config relying on upstream's defaults
  would raise a bare KeyError there). Upstream's model refuses a reduced vocabulary and vLLM's selector
  ignores d2t (its candidates are lm_head rows), so dflash2 is full-vocabulary only.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from speculators_core.format.eagle3 import DraftLayerConfig, DraftShape
from speculators_core.format.envelope import SpeculatorModelConfig
from speculators_core.format.registry import register_speculator_type

# Upstream's recipe (its docs/ best practice) as opposed to its CLI defaults (block 8, 1 layer): the
# values `speculators train --algorithm dflash` uses unless told otherwise.
RECIPE_BLOCK_SIZE = 16
RECIPE_NUM_LAYERS = 5
UPSTREAM_DEFAULT_BLOCK_SIZE = 8  # DFlashSpeculatorConfig.block_size's default (a config without the key)


class DFlashLayerConfig(DraftLayerConfig):
    """The draft decoder's HF config: Qwen3 layers (q/k norms), as vLLM's DFlashDraftModel builds them."""

    model_type: Literal["qwen3"]


@register_speculator_type(
    "dflash",
    method="dflash",
    vllm_serves=True,
    has_model=True,
    description="DFlash block-diffusion drafter (a block per pass)",
)
class DFlashConfig(DraftShape, SpeculatorModelConfig):
    default_architectures: ClassVar[list[str]] = ["DFlashDraftModel"]

    speculators_model_type: Literal["dflash"] = "dflash"  # type: ignore[assignment]
    transformer_layer_config: DFlashLayerConfig
    draft_vocab_size: int = Field(ge=1)
    block_size: int = Field(default=UPSTREAM_DEFAULT_BLOCK_SIZE, ge=2, le=64)
    target_hidden_size: int | None = Field(default=None, ge=1)
    aux_hidden_state_layer_ids: list[int]
    mask_token_id: int = Field(ge=0)
    sliding_window_non_causal: bool = False
    sample_from_anchor: bool = False

    @model_validator(mode="before")
    @classmethod
    def _full_vocabulary_when_absent(cls, data: Any) -> Any:
        # vLLM reads a missing draft_vocab_size as None (the verifier's vocabulary); upstream's model would
        # assume 32000. A config is served by vLLM, so its reading wins; upstream always writes the key.
        if isinstance(data, dict) and "draft_vocab_size" not in data:
            layer = data.get("transformer_layer_config")
            vocab = layer.get("vocab_size") if isinstance(layer, dict) else None
            if isinstance(vocab, int):
                data = {**data, "draft_vocab_size": vocab}
        return data

    @field_validator("aux_hidden_state_layer_ids")
    @classmethod
    def _distinct_ids(cls, value: list[int]) -> list[int]:
        if not value or any(i < 0 for i in value) or len(set(value)) != len(value):
            raise ValueError(
                "must list distinct verifier hidden-state indices >= 0 (i = output of decoder layer i-1, "
                f"the rule upstream applies), got {value}"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DFlashConfig:
        vocab = self.transformer_layer_config.vocab_size
        if self.draft_vocab_size > vocab:
            raise ValueError(
                f"draft_vocab_size ({self.draft_vocab_size}) cannot exceed the verifier vocabulary "
                f"transformer_layer_config.vocab_size ({vocab})"
            )
        if self.mask_token_id >= vocab:
            raise ValueError(
                f"mask_token_id ({self.mask_token_id}) must be a token of the verifier vocabulary "
                f"(< transformer_layer_config.vocab_size {vocab})"
            )
        k = self.speculative_tokens
        if k > self.max_speculative_tokens:
            raise ValueError(
                f"speculators_config.proposal_methods[0].speculative_tokens ({k}) exceeds what a block of "
                f"{self.block_size} drafts ({self.max_speculative_tokens} with sample_from_anchor="
                f"{str(self.sample_from_anchor).lower()}); lower it or raise block_size"
            )
        return self

    @property
    def max_speculative_tokens(self) -> int:
        """Draft tokens one block yields: block_size - 1 (the anchor is the bonus token), or block_size."""
        return self.block_size if self.sample_from_anchor else self.block_size - 1

    @property
    def target_layer_ids(self) -> list[int]:
        """The verifier decoder layers whose outputs the draft reads (vLLM's dflash_config)."""
        return [i - 1 for i in self.aux_hidden_state_layer_ids]


@register_speculator_type(
    "dflash2",
    method="dflash",
    vllm_serves=True,
    has_model=True,
    description="DFlash2 (local convolutions, candidate selector; served as dflash)",
)
class DFlash2Config(DFlashConfig):
    """DFlash plus a grouped dynamic causal convolution around each layer's attention and MLP
    (`conv_kernel_size` taps, one kernel per `conv_group_size` channels) and a bilinear candidate selector
    (`selector_rank`) that reranks the unary top-`selector_top_k` at inference."""

    default_architectures: ClassVar[list[str]] = ["DFlash2DraftModel"]

    speculators_model_type: Literal["dflash2"] = "dflash2"  # type: ignore[assignment]
    sliding_window_non_causal: bool = True
    conv_kernel_size: int = Field(default=2, ge=1)
    conv_group_size: int = Field(default=16, ge=1)
    selector_rank: int = Field(default=256, ge=1)
    selector_top_k: int = Field(default=16, ge=1)

    @model_validator(mode="after")
    def _dflash2_shape(self) -> DFlash2Config:
        # The checks upstream's DFlash2DraftModel and GroupedDynamicCausalConv make when the model is built,
        # moved to the config so that inspect and load name the field before any tensor is read.
        vocab = self.transformer_layer_config.vocab_size
        if self.draft_vocab_size != vocab:
            raise ValueError(
                f"draft_vocab_size ({self.draft_vocab_size}) must equal transformer_layer_config.vocab_size "
                f"({vocab}): dflash2 drafts over the full verifier vocabulary (upstream refuses a reduced "
                "one, and vLLM's candidate selector reads lm_head rows without d2t)"
            )
        if self.selector_top_k > vocab:
            raise ValueError(f"selector_top_k ({self.selector_top_k}) cannot exceed the vocabulary ({vocab})")
        if self.hidden_size % self.conv_group_size:
            raise ValueError(
                f"conv_group_size ({self.conv_group_size}) must divide the draft hidden_size "
                f"({self.hidden_size})"
            )
        if self.conv_kernel_size > self.block_size:
            raise ValueError(
                f"conv_kernel_size ({self.conv_kernel_size}) cannot exceed block_size ({self.block_size})"
            )
        return self
