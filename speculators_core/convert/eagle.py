"""EAGLE-1 / EAGLE-2 / HASS research checkpoints -> speculators `eagle` (legacy format).

Renames (as upstream's EagleConverter): fc.* -> fusion_fc.*, layers.0.* -> transformer.*,
embed_layernorm -> embedding_layernorm, lm_head_layernorm -> pre_lm_head_layernorm,
hidden_layernorm -> transformer.input_layernorm. HASS is detected from fc.bias, the extra layernorms from
embed_layernorm.weight. embed_tokens/lm_head belong to the verifier and are dropped (after checking their
vocabulary matches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from speculators_core.convert.common import (
    Verifier,
    drop_ignored,
    drop_rotary_buffers,
    llama_layer_kwargs,
    unexpected_error,
)
from speculators_core.convert.report import ConversionReport
from speculators_core.convert.source import ResearchCheckpoint
from speculators_core.format.eagle import EagleConfig
from speculators_core.format.envelope import SpeculatorsConfig
from speculators_core.format.errors import CheckpointError, FormatError, IncompatibleError

_NORM_RENAMES = {
    "embed_layernorm.weight": "embedding_layernorm.weight",
    "lm_head_layernorm.weight": "pre_lm_head_layernorm.weight",
    "hidden_layernorm.weight": "transformer.input_layernorm.weight",
}


@dataclass
class EagleOptions:
    speculative_tokens: int = 3
    ignore_tensors: Sequence[str] = field(default_factory=tuple)


def plan_eagle(
    ckpt: ResearchCheckpoint, verifier: Verifier, opts: EagleOptions, report: ConversionReport
) -> tuple[EagleConfig, dict[str, torch.Tensor]]:
    src = str(ckpt.directory)
    cfg = ckpt.config
    if "speculators_model_type" in cfg:
        raise FormatError(
            f"{src}/config.json: already a speculators checkpoint; use it as is (speculators inspect)"
        )
    state = drop_rotary_buffers(drop_ignored(dict(ckpt.state), opts.ignore_tensors, report), report)
    if any(k.startswith("midlayer.") for k in state):
        raise CheckpointError(
            f"{src}: midlayer.* tensors are SafeAILab EAGLE-3; convert with --algorithm eagle3"
        )
    if "fc.weight" not in state:
        raise CheckpointError(f"{src}: fc.weight is missing; not an EAGLE-1/HASS checkpoint")
    fusion_bias = "fc.bias" in state
    layernorms = "embed_layernorm.weight" in state
    report.variant = "hass" if fusion_bias else "eagle"
    report.notes.append(
        f"detected fusion_bias={str(fusion_bias).lower()} (fc.bias), layernorms={str(layernorms).lower()}"
    )

    vocab, hidden = verifier.vocab_size, verifier.hidden_size
    if isinstance(cfg.get("vocab_size"), int) and cfg["vocab_size"] != vocab:
        raise IncompatibleError(
            f"{src}/config.json: vocab_size {cfg['vocab_size']} differs from the verifier {verifier.ref} "
            "vocab_size "
            f"{vocab}; EAGLE-1 drafts use the verifier's embeddings and lm_head, so they must match"
        )
    fc = state["fc.weight"]
    if tuple(fc.shape) != (hidden, 2 * hidden):
        raise IncompatibleError(
            f"{src}: fc.weight has shape {list(fc.shape)}; with the verifier {verifier.ref} (hidden size "
            f"{hidden}) "
            f"it must be [{hidden}, {2 * hidden}]"
        )

    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name in ("embed_tokens.weight", "lm_head.weight"):
            if tensor.shape[0] != vocab:
                raise IncompatibleError(
                    f"{src}: {name} covers {tensor.shape[0]} tokens but the verifier {verifier.ref} has "
                    f"{vocab}"
                )
            report.dropped.append((name, "borrowed from the verifier at load time; not stored by the format"))
            continue
        if name == "hidden_layernorm.weight" and not layernorms:
            report.dropped.append((name, "unused without the extra layernorms (as upstream)"))
            continue
        if name in _NORM_RENAMES:
            new = _NORM_RENAMES[name]
        elif name.startswith("fc."):
            new = "fusion_fc." + name[len("fc.") :]
        elif name.startswith("layers.0."):
            new = "transformer." + name[len("layers.0.") :]
        else:
            new = name
        if new != name:
            report.renamed.append((name, new))
        out[new] = tensor
    stray = [k for k in out if k.startswith("layers.")]
    if stray:
        raise unexpected_error(src, stray, "EAGLE-1/HASS (one decoder layer)")
    layer = _layer_config(cfg, verifier, out)
    config = EagleConfig(
        transformer_layer_config=layer,  # type: ignore[arg-type]
        layernorms=layernorms,
        fusion_bias=fusion_bias,
        speculators_config=SpeculatorsConfig.greedy(
            "eagle", opts.speculative_tokens, verifier.ref, verifier.architectures
        ),
    )
    return config, out


def _layer_config(cfg: dict[str, Any], verifier: Verifier, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    from transformers import LlamaConfig

    kwargs = llama_layer_kwargs(cfg, verifier)
    gate = state.get("transformer.mlp.gate_proj.weight")
    if gate is not None:
        kwargs["intermediate_size"] = int(gate.shape[0])
    kwargs.update(hidden_size=verifier.hidden_size, vocab_size=verifier.vocab_size, num_hidden_layers=1)
    if "transformer.self_attn.q_proj.bias" in state:
        kwargs["attention_bias"] = True
    data: dict[str, Any] = LlamaConfig(**kwargs).to_diff_dict()
    data.pop("transformers_version", None)
    return data
