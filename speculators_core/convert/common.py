"""Pieces shared by the EAGLE-3 and EAGLE-1/HASS converters."""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from speculators_core.convert.report import ConversionReport
from speculators_core.format.errors import CheckpointError, SpeculatorsError
from speculators_core.models.verifier import load_verifier_tensors, read_verifier_config


@dataclass
class Verifier:
    """The verifier a draft is converted for: its reference, text config and (lazily) borrowed tensors."""

    ref: str
    config: dict[str, Any]
    revision: str | None = None
    _tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    _unavailable: str | None = None

    @classmethod
    def read(cls, ref: str, *, revision: str | None = None) -> Verifier:
        return cls(ref=ref, config=read_verifier_config(ref, revision=revision), revision=revision)

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    @property
    def hidden_size(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def num_hidden_layers(self) -> int:
        return int(self.config["num_hidden_layers"])

    @property
    def architectures(self) -> list[str]:
        return list(self.config.get("architectures") or [])

    def tensor(self, role: str) -> torch.Tensor | None:
        """The verifier's `role` tensor (embed | lm_head | norm), or None if its weights are not readable."""
        if role in self._tensors:
            return self._tensors[role]
        if self._unavailable is not None:
            return None
        try:
            self._tensors.update(
                load_verifier_tensors(self.ref, ["embed", "lm_head"], revision=self.revision)
            )
        except SpeculatorsError as exc:
            self._unavailable = str(exc)
            return None
        return self._tensors.get(role)

    @property
    def unavailable_reason(self) -> str | None:
        return self._unavailable


def drop_ignored(
    state: dict[str, torch.Tensor], patterns: Sequence[str], report: ConversionReport
) -> dict[str, torch.Tensor]:
    """Remove tensors matching the user's --ignore-tensor globs (reported as dropped)."""
    if not patterns:
        return state
    kept: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            report.dropped.append((name, "ignored by --ignore-tensor"))
        else:
            kept[name] = tensor
    return kept


def drop_rotary_buffers(state: dict[str, torch.Tensor], report: ConversionReport) -> dict[str, torch.Tensor]:
    """Old checkpoints saved rotary inv_freq buffers; they are recomputed from the rope config."""
    kept = {}
    for name, tensor in state.items():
        if name.endswith("rotary_emb.inv_freq"):
            report.dropped.append((name, "rotary buffer; recomputed from the rope config"))
        else:
            kept[name] = tensor
    return kept


def main_float_dtype(state: dict[str, torch.Tensor]) -> torch.dtype:
    floats = [t.dtype for t in state.values() if t.is_floating_point()]
    if not floats:
        raise CheckpointError("the checkpoint has no floating-point tensors")
    return Counter(floats).most_common(1)[0][0]


def cast_floats(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}


def unexpected_error(source: str, names: Sequence[str], kind: str) -> CheckpointError:
    return CheckpointError(
        f"{source}: unexpected tensors {sorted(names)} for a {kind} checkpoint; they would be lost. "
        "If they are not needed, drop them deliberately with --ignore-tensor NAME (globs allowed); "
        "otherwise this is not a checkpoint of this kind"
    )


def llama_layer_kwargs(config: dict[str, Any], verifier: Verifier) -> dict[str, Any]:
    """LlamaConfig kwargs for a research draft layer: its own config first, the verifier's as fallback."""

    def pick(key: str, default: Any = None) -> Any:
        for source in (config, verifier.config):
            if source.get(key) is not None:
                return source[key]
        return default

    kwargs: dict[str, Any] = {
        "hidden_size": pick("hidden_size"),
        "intermediate_size": pick("intermediate_size"),
        "num_attention_heads": pick("num_attention_heads"),
        "num_key_value_heads": pick("num_key_value_heads"),
        "hidden_act": pick("hidden_act", "silu"),
        "rms_norm_eps": pick("rms_norm_eps", 1e-6),
        "max_position_embeddings": max(
            int(config.get("max_position_embeddings") or 0),
            int(verifier.config.get("max_position_embeddings") or 0),
        )
        or 4096,
        "attention_bias": bool(config.get("attention_bias", False)),
        "mlp_bias": bool(config.get("mlp_bias", False)),
        "tie_word_embeddings": False,
    }
    if config.get("head_dim") is not None:
        kwargs["head_dim"] = config["head_dim"]
    rope_source = (
        config
        if any(k in config for k in ("rope_theta", "rope_scaling", "rope_parameters"))
        else verifier.config
    )
    for key in ("rope_parameters", "rope_theta", "rope_scaling"):
        if rope_source.get(key) is not None:
            kwargs[key] = rope_source[key]
    return kwargs
