"""EAGLE-3 draft model (speculators format `eagle3`), trainable with train-time test and usable for drafting.

Weights (names as vLLM 0.33 and upstream speculators 0.9.0 load them):
    embed_tokens.weight [V, H]        frozen copy of the verifier's embeddings (V = verifier vocabulary)
    fc.weight [H, n_aux*H_v]          fusion of the verifier's aux hidden states (no bias)
    input_norm.weight [n_aux*H_v]     only with norm_before_fc
    fc_norm.{i}.weight [H_v]          only with fc_norm
    layers.0.{hidden_norm,input_layernorm,post_attention_layernorm}.weight, layers.0.self_attn.*
                                      (q/k/v take cat(embeds, hidden): 2H), layers.0.mlp.*
    layers.{1..}.*                    standard llama/qwen3 decoder layers
    norm.weight [H], lm_head.weight [V_draft, H]
    d2t [V_draft] int64 (target id = draft id + d2t[id]), t2d [V] bool: only when V_draft != V
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from speculators_core.format.eagle3 import Eagle3Config
from speculators_core.format.envelope import SpeculatorsConfig
from speculators_core.format.errors import CheckpointError, IncompatibleError
from speculators_core.models.attention import AttnImpl
from speculators_core.models.base import DraftModel
from speculators_core.models.layers import DecoderLayer, Eagle3FirstLayer, LayerCache, RMSNorm, StepContext
from speculators_core.models.verifier import load_verifier_tensors


def check_vocab_mapping(
    d2t: torch.Tensor,
    t2d: torch.Tensor,
    *,
    draft_vocab_size: int,
    vocab_size: int,
    source: str = "vocab mapping",
) -> None:
    """d2t/t2d must describe the same `draft_vocab_size` verifier ids (CheckpointError otherwise)."""
    fix = "rebuild the mapping (speculators train writes both) or fix draft_vocab_size in config.json"
    if d2t.dim() != 1 or d2t.shape[0] != draft_vocab_size:
        raise CheckpointError(
            f"{source}: d2t has shape {list(d2t.shape)}, draft_vocab_size is {draft_vocab_size}; {fix}"
        )
    if t2d.dim() != 1 or t2d.shape[0] != vocab_size:
        raise CheckpointError(
            f"{source}: t2d has shape {list(t2d.shape)}, the verifier vocabulary (vocab_size) is "
            f"{vocab_size}; {fix}"
        )
    kept = int(t2d.bool().sum())
    if kept != draft_vocab_size:
        raise CheckpointError(
            f"{source}: t2d marks {kept} tokens, draft_vocab_size is {draft_vocab_size}; {fix}"
        )
    target = torch.arange(draft_vocab_size, device=d2t.device) + d2t.long()
    if int(target.min()) < 0 or int(target.max()) >= vocab_size:
        raise CheckpointError(
            f"{source}: d2t maps draft ids outside the verifier vocabulary [0, {vocab_size}); {fix}"
        )
    if target.unique().numel() != draft_vocab_size or not bool(t2d.bool()[target].all()):
        raise CheckpointError(
            f"{source}: d2t and t2d disagree on which verifier tokens the draft keeps; {fix}"
        )


def t2d_from_d2t(d2t: torch.Tensor, vocab_size: int) -> torch.Tensor:
    t2d = torch.zeros(vocab_size, dtype=torch.bool)
    t2d[torch.arange(d2t.shape[0]) + d2t.long().cpu()] = True
    return t2d


class VocabMapping:
    """d2t/t2d of a draft whose vocabulary is a subset of the verifier's (mixed into nn.Module drafts that
    set vocab_size and draft_vocab_size)."""

    vocab_size: int
    draft_vocab_size: int
    d2t: torch.Tensor | None
    t2d: torch.Tensor | None

    def _init_vocab_mapping(self, used: bool) -> None:
        if used:
            self.register_buffer("d2t", torch.zeros(self.draft_vocab_size, dtype=torch.long))  # type: ignore[attr-defined]
            self.register_buffer("t2d", torch.zeros(self.vocab_size, dtype=torch.bool))  # type: ignore[attr-defined]
        else:
            self.d2t = None
            self.t2d = None

    def to_target_ids(self, draft_ids: torch.Tensor) -> torch.Tensor:
        return draft_ids if self.d2t is None else draft_ids + self.d2t[draft_ids]

    def set_vocab_mapping(self, d2t: torch.Tensor, t2d: torch.Tensor | None = None) -> None:
        """Install d2t (and t2d; derived from d2t when omitted) after checking they agree."""
        if self.d2t is None or self.t2d is None:
            raise ValueError(
                "draft_vocab_size equals the verifier vocabulary: this draft has no vocab mapping"
            )
        if t2d is None:
            t2d = t2d_from_d2t(d2t, self.vocab_size)
        check_vocab_mapping(d2t, t2d, draft_vocab_size=self.draft_vocab_size, vocab_size=self.vocab_size)
        with torch.no_grad():
            self.d2t.copy_(d2t.long())
            self.t2d.copy_(t2d.bool())

    def _check_mapping_tensors(self, state: Mapping[str, torch.Tensor], source: str) -> None:
        """Before a load: d2t/t2d present exactly when the config says the vocabulary is reduced."""
        if self.d2t is not None and ("d2t" in state) != ("t2d" in state):
            raise CheckpointError(
                f"{source}: has only one of d2t/t2d; both are required when draft_vocab_size != vocab_size"
            )
        if self.d2t is None and ("d2t" in state or "t2d" in state):
            raise CheckpointError(
                f"{source}: has d2t/t2d but config.json says draft_vocab_size == vocab_size "
                f"({self.draft_vocab_size}); set draft_vocab_size to d2t's length"
            )
        if self.d2t is not None and "d2t" in state and state["d2t"].shape[0] != self.draft_vocab_size:
            raise CheckpointError(
                f"{source}: d2t has {state['d2t'].shape[0]} entries but config.json draft_vocab_size is "
                f"{self.draft_vocab_size}; fix draft_vocab_size or the mapping"
            )

    def _check_mapping(self, source: str = "vocab mapping") -> None:
        if self.d2t is not None and self.t2d is not None:
            check_vocab_mapping(
                self.d2t,
                self.t2d,
                draft_vocab_size=self.draft_vocab_size,
                vocab_size=self.vocab_size,
                source=source,
            )


class Eagle3DraftModel(VocabMapping, DraftModel):
    """EAGLE-3 draft. `forward` is the TTT unroll (see DraftModel.forward); `propose` drafts k tokens.

    Step computation (one TTT step, matching upstream 0.9.0 and vLLM 0.33):
        fused  = fc(norms(aux))                                      (step 0 only)
        x      = layers[0](embed_tokens(ids), hidden); x = layers[i](x) for i >= 1
        out    = norm(x); logits = lm_head(out)                      [B, T, V_draft]
        next hidden = out if norm_output else x
    """

    config_class: ClassVar[type[Eagle3Config]] = Eagle3Config
    optional_tensors: ClassVar[tuple[str, ...]] = ("embed_tokens.weight",)
    config: Eagle3Config

    def __init__(self, config: Eagle3Config, *, attn_implementation: AttnImpl = "sdpa") -> None:
        super().__init__(config, attn_implementation=attn_implementation)
        lc = self.layer_config
        hidden, n_aux, width = config.hidden_size, config.num_aux_layers, config.verifier_hidden_size
        self.vocab_size = config.transformer_layer_config.vocab_size
        self.draft_vocab_size = config.draft_vocab_size
        self.hidden_size = hidden
        self.embed_tokens = nn.Embedding(self.vocab_size, hidden)
        self.embed_tokens.weight.requires_grad_(config.embed_requires_grad)
        self.input_norm = RMSNorm(n_aux * width, eps=lc.rms_norm_eps) if config.norm_before_fc else None
        self.fc_norm = (
            nn.ModuleList([RMSNorm(width, eps=lc.rms_norm_eps) for _ in range(n_aux)])
            if config.fc_norm
            else None
        )
        self.fc = nn.Linear(n_aux * width, hidden, bias=False)
        layers: list[nn.Module] = [Eagle3FirstLayer(lc, 0, norm_before_residual=config.norm_before_residual)]
        layers += [DecoderLayer(lc, i) for i in range(1, lc.num_hidden_layers)]
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(hidden, eps=lc.rms_norm_eps)
        self.lm_head = nn.Linear(hidden, self.draft_vocab_size, bias=False)
        self._init_vocab_mapping(config.uses_vocab_mapping)
        self.embeddings_loaded = True  # False after loading a checkpoint that lacks embed_tokens
        self._init_weights(lc.initializer_range if hasattr(lc, "initializer_range") else 0.02)

    def _init_weights(self, std: float) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)

    # ----------------------------------------------------------------- hooks
    def _fuse(self, hidden_states: torch.Tensor) -> torch.Tensor:
        expected = self.fc.in_features
        if hidden_states.shape[-1] != expected:
            n_aux, width = self.config.num_aux_layers, self.config.verifier_hidden_size
            raise ValueError(
                f"hidden_states last dim is {hidden_states.shape[-1]}, expected {expected} "
                f"({n_aux} aux layers x verifier hidden size {width})"
            )
        hidden_states = hidden_states.to(self.fc.weight.dtype)
        if self.input_norm is not None:
            hidden_states = self.input_norm(hidden_states)
        if self.fc_norm is not None:
            chunks = hidden_states.chunk(len(self.fc_norm), dim=-1)
            hidden_states = torch.cat([norm(c) for norm, c in zip(self.fc_norm, chunks, strict=True)], dim=-1)
        return self.fc(hidden_states)

    def _step(
        self, input_ids: torch.Tensor, hidden: torch.Tensor, ctx: StepContext, caches: list[LayerCache]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.embeddings_loaded:
            raise CheckpointError(
                "embed_tokens.weight was not in the checkpoint; load with verifier=... (or call "
                "attach_verifier) "
                "to copy the verifier's embeddings"
            )
        embeds = self.embed_tokens(input_ids)
        first: Eagle3FirstLayer = self.layers[0]  # type: ignore[assignment]
        x = first.forward_pair(embeds, hidden, ctx, caches[0])
        for layer, cache in zip(self.layers[1:], caches[1:], strict=True):
            x = layer(x, ctx, cache)
        out = self.norm(x)
        return self.lm_head(out), (out if self.config.norm_output else x)

    def needs_verifier(self) -> bool:
        return not self.embeddings_loaded

    # ----------------------------------------------------------------- verifier-owned pieces
    def set_embeddings(self, weight: torch.Tensor) -> None:
        if tuple(weight.shape) != tuple(self.embed_tokens.weight.shape):
            raise IncompatibleError(
                f"verifier embeddings have shape {list(weight.shape)}, the draft expects "
                f"{list(self.embed_tokens.weight.shape)} (vocab_size x hidden_size); the draft does not fit "
                "this verifier"
            )
        with torch.no_grad():
            self.embed_tokens.weight.copy_(weight.to(self.embed_tokens.weight.dtype))
        self.embeddings_loaded = True

    def attach_verifier(self, verifier: str | os.PathLike[str], *, revision: str | None = None) -> None:
        """Copy the verifier's embeddings into embed_tokens (the frozen copy the format stores)."""
        self.set_embeddings(load_verifier_tensors(verifier, ["embed"], revision=revision)["embed"])

    def init_lm_head_from_verifier(
        self, verifier: str | os.PathLike[str], *, revision: str | None = None
    ) -> None:
        """Initialise lm_head with the verifier's lm_head rows of the draft vocabulary (upstream's init)."""
        self.init_lm_head(load_verifier_tensors(verifier, ["lm_head"], revision=revision)["lm_head"])

    def init_lm_head(self, weight: torch.Tensor) -> None:
        """`init_lm_head_from_verifier` from the verifier's lm_head tensor [V, H] already in memory."""
        if self.t2d is not None:
            weight = weight[self.t2d.cpu()]
        if tuple(weight.shape) != tuple(self.lm_head.weight.shape):
            raise IncompatibleError(
                f"verifier lm_head rows have shape {list(weight.shape)}, the draft lm_head is "
                f"{list(self.lm_head.weight.shape)}"
            )
        with torch.no_grad():
            self.lm_head.weight.copy_(weight.to(self.lm_head.weight.dtype))

    # ----------------------------------------------------------------- load checks
    def validate_state_dict(self, state: dict[str, torch.Tensor], *, source: str) -> list[str]:
        self._check_mapping_tensors(state, source)
        if "embed_tokens.weight" in state and state["embed_tokens.weight"].shape[0] != self.vocab_size:
            raise IncompatibleError(
                f"{source}: embed_tokens.weight has {state['embed_tokens.weight'].shape[0]} rows but "
                f"transformer_layer_config.vocab_size (the verifier vocabulary) is {self.vocab_size}"
            )
        missing = super().validate_state_dict(state, source=source)
        if "embed_tokens.weight" in missing:
            self.embeddings_loaded = False
        return missing

    def _after_load(self, state: dict[str, torch.Tensor], *, source: str) -> None:
        self._check_mapping(source)

    def _check_before_save(self, state: dict[str, torch.Tensor]) -> None:
        if not self.embeddings_loaded:
            raise CheckpointError(
                "embed_tokens was never loaded; call attach_verifier(verifier) before saving"
            )
        self._check_mapping()
        super()._check_before_save(state)


def default_aux_layer_ids(num_verifier_layers: int) -> list[int]:
    """Upstream's training default [2, n//2, n-3] (distinct ids required)."""
    ids = [2, num_verifier_layers // 2, num_verifier_layers - 3]
    if len(set(ids)) != 3 or min(ids) < 0:
        raise ValueError(
            f"the verifier has {num_verifier_layers} layers: the default aux layers {ids} are not distinct; "
            "pass aux_layer_ids explicitly"
        )
    return ids


def draft_layer_config(
    verifier_config: Mapping[str, Any],
    *,
    num_layers: int,
    draft_arch: str = "llama",
    sliding_window: int | None = None,
    layer_overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`transformer_layer_config` of a draft shaped after a verifier's (text) config: hidden size, heads,
    head_dim, intermediate size, activation, rms eps and rope copied; `layer_overrides` replaces any."""
    from transformers import AutoConfig

    if draft_arch not in ("llama", "qwen3"):
        raise ValueError(f"draft_arch {draft_arch!r} is not supported; allowed: llama, qwen3")
    vc = dict(verifier_config)
    keys = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "hidden_act",
        "max_position_embeddings",
        "rms_norm_eps",
        "initializer_range",
    )
    layer: dict[str, Any] = {k: vc[k] for k in keys if vc.get(k) is not None}
    for rope_key in ("rope_parameters", "rope_scaling", "rope_theta"):
        if vc.get(rope_key) is not None:
            layer[rope_key] = vc[rope_key]
    if isinstance(layer.get("rope_parameters"), dict):
        layer["rope_parameters"] = {
            k: v for k, v in layer["rope_parameters"].items() if k not in ("type", "mrope_interleaved")
        }
    layer["num_hidden_layers"] = num_layers
    layer["tie_word_embeddings"] = False
    if sliding_window is not None:
        layer.update(
            sliding_window=sliding_window,
            use_sliding_window=True,
            layer_types=["sliding_attention"] * num_layers,
        )
    layer.update(layer_overrides or {})
    layer_dict: dict[str, Any] = AutoConfig.for_model(draft_arch, **layer).to_diff_dict()
    layer_dict.pop("transformers_version", None)
    return layer_dict


def build_eagle3_config(
    verifier_config: Mapping[str, Any],
    *,
    verifier_name_or_path: str,
    num_layers: int = 1,
    draft_vocab_size: int | None = None,
    aux_layer_ids: Sequence[int] | None = None,
    speculative_tokens: int = 3,
    draft_arch: str = "llama",
    norm_before_residual: bool = True,
    norm_before_fc: bool = True,
    fc_norm: bool = False,
    norm_output: bool = True,
    sliding_window: int | None = None,
    layer_overrides: Mapping[str, Any] | None = None,
) -> Eagle3Config:
    """An Eagle3Config shaped after a verifier's (text) config, with upstream 0.9.0's training defaults
    (norm_before_residual, norm_before_fc and norm_output true; aux layers [2, n//2, n-3]).

    The draft layer copies the verifier's hidden size, heads, head_dim, intermediate size, activation, rms
    eps and rope; `layer_overrides` replaces any of them. `sliding_window` makes every draft layer a
    sliding-window layer (upstream's --sliding-window).
    """
    vc = dict(verifier_config)
    layer_dict = draft_layer_config(
        vc,
        num_layers=num_layers,
        draft_arch=draft_arch,
        sliding_window=sliding_window,
        layer_overrides=layer_overrides,
    )
    ids = (
        list(aux_layer_ids)
        if aux_layer_ids is not None
        else default_aux_layer_ids(int(vc["num_hidden_layers"]))
    )
    return Eagle3Config(
        transformer_layer_config=layer_dict,  # type: ignore[arg-type]
        draft_vocab_size=draft_vocab_size or int(vc["vocab_size"]),
        norm_before_residual=norm_before_residual,
        norm_before_fc=norm_before_fc,
        fc_norm=fc_norm,
        norm_output=norm_output,
        target_hidden_size=None if layer_dict["hidden_size"] == vc["hidden_size"] else int(vc["hidden_size"]),
        eagle_aux_hidden_state_layer_ids=ids,
        speculators_config=SpeculatorsConfig.greedy(
            "eagle3", speculative_tokens, verifier_name_or_path, vc.get("architectures")
        ),
    )
