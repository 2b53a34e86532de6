"""Research DFlash checkpoints (z-lab layout, e.g. z-lab/Qwen3-8B-DFlash-b16) -> speculators `dflash`.

The z-lab layout (what upstream 0.9.0's DFlashConverter reads): config.json is the draft's Qwen3 config
plus `dflash_config` {target_layer_ids, mask_token_id[, block_size]} and, in older checkpoints, a top-level
`block_size`; the weights are the draft body as DFlashDraftModel names it (layers.N.*, fc, hidden_norm,
norm), borrowing embed_tokens and lm_head from the verifier. Some checkpoints fuse q/k/v into qkv_proj
(split here) or carry gates and per-aux norms DFlash has no place for (dropped, and reported).

z-lab's target_layer_ids index decoder layers (it reads hidden_states[id + 1]); the format records
hidden_states indices, so aux = target + 1. Unlike upstream's converter this keeps a target id at the
verifier's last layer (upstream drops it for its own datagen's sake, which leaves fc one layer too wide).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from speculators_core.convert.common import Verifier, drop_ignored, drop_rotary_buffers, unexpected_error
from speculators_core.convert.report import ConversionReport
from speculators_core.convert.source import ResearchCheckpoint
from speculators_core.format.dflash import DFlashConfig
from speculators_core.format.envelope import SpeculatorsConfig
from speculators_core.format.errors import FormatError, IncompatibleError

# config.json keys that are not part of the draft decoder's (Qwen3) config
_NOT_LAYER = frozenset({"architectures", "auto_map", "block_size", "dflash_config", "num_target_layers"})
_BODY = ("layers.", "fc.weight", "hidden_norm.weight", "norm.weight")


@dataclass
class DFlashOptions:
    speculative_tokens: int | None = None  # default: the whole block (block_size - 1)
    aux_layer_ids: list[int] | None = None
    mask_token_id: int | None = None
    ignore_tensors: tuple[str, ...] = field(default_factory=tuple)


def _split_fused_qkv(state: dict[str, torch.Tensor], layer: dict[str, Any], report: ConversionReport) -> None:
    heads, kv_heads = (
        int(layer["num_attention_heads"]),
        int(layer.get("num_key_value_heads") or layer["num_attention_heads"]),
    )
    head_dim = int(layer.get("head_dim") or layer["hidden_size"] // heads)
    for name in [k for k in state if ".qkv_proj." in k]:
        parts = [name.replace("qkv_proj", p) for p in ("q_proj", "k_proj", "v_proj")]
        if any(p in state for p in parts):
            raise FormatError(f"{name}: the checkpoint has both a fused qkv_proj and separate q/k/v_proj")
        q, k, v = state.pop(name).split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=0)
        state.update(zip(parts, (q, k, v), strict=True))
        report.renamed.append((name, ", ".join(parts)))


def plan_dflash(
    ckpt: ResearchCheckpoint, verifier: Verifier, opts: DFlashOptions, report: ConversionReport
) -> tuple[DFlashConfig, dict[str, torch.Tensor]]:
    src = str(ckpt.directory)
    cfg = ckpt.config
    if "speculators_model_type" in cfg:
        raise FormatError(
            f"{src}/config.json: already a speculators checkpoint; use it as is (speculators inspect)"
        )
    dflash = cfg.get("dflash_config") if isinstance(cfg.get("dflash_config"), dict) else {}
    block_size = cfg.get("block_size") or dflash.get("block_size")
    if not isinstance(block_size, int):
        raise FormatError(f"{src}/config.json: no block_size (looked at the top level and in dflash_config)")
    layer = {k: v for k, v in cfg.items() if k not in _NOT_LAYER}
    layer.setdefault("model_type", "qwen3")
    if layer["model_type"] != "qwen3":
        raise IncompatibleError(
            f"{src}/config.json: model_type {layer['model_type']!r}: DFlash drafts are Qwen3 layers"
        )
    for key in ("hidden_size", "vocab_size"):
        mine, theirs = layer.get(key), getattr(verifier, key)
        if mine is not None and mine != theirs:
            raise IncompatibleError(
                f"{src}/config.json: {key} {mine} but the verifier has {theirs}; the draft was trained for "
                "another verifier"
            )
    if opts.aux_layer_ids is not None:
        aux = list(opts.aux_layer_ids)
    else:
        target = dflash.get("target_layer_ids")
        if not target:
            raise FormatError(f"{src}/config.json: no dflash_config.target_layer_ids; pass --aux-layer-ids")
        aux = [int(i) + 1 for i in target]
    mask = opts.mask_token_id if opts.mask_token_id is not None else dflash.get("mask_token_id")
    if mask is None:
        raise FormatError(f"{src}/config.json: no dflash_config.mask_token_id; pass --mask-token-id")

    state = drop_rotary_buffers(drop_ignored(dict(ckpt.state), opts.ignore_tensors, report), report)
    _split_fused_qkv(state, layer, report)
    for name in [k for k in state if ".g_proj." in k or k.startswith("aux_hidden_norms.")]:
        state.pop(name)
        report.dropped.append((name, "no DFlash equivalent (upstream's converter drops it too)"))
    for name in [k for k in state if k in ("embed_tokens.weight", "lm_head.weight")]:
        state.pop(name)
        report.dropped.append((name, "the verifier's own: DFlash borrows it at load time"))
    report.absent += [
        ("embed_tokens.weight", "borrowed from the verifier"),
        ("lm_head.weight", "borrowed from the verifier (full vocabulary)"),
    ]
    unexpected = sorted(k for k in state if not k.startswith(_BODY))
    if unexpected:
        raise unexpected_error(src, unexpected, "dflash")
    report.variant = "z-lab"
    report.notes.append(f"aux_hidden_state_layer_ids {aux} (z-lab target_layer_ids + 1); block {block_size}")
    k = opts.speculative_tokens or block_size - 1
    config = DFlashConfig(
        transformer_layer_config=layer,  # type: ignore[arg-type]
        draft_vocab_size=int(layer.get("vocab_size") or verifier.vocab_size),
        block_size=block_size,
        aux_hidden_state_layer_ids=aux,
        mask_token_id=int(mask),
        sliding_window_non_causal=False,  # upstream's converter leaves its default
        speculators_config=SpeculatorsConfig.greedy("dflash", k, verifier.ref, verifier.architectures),
    )
    return config, state
