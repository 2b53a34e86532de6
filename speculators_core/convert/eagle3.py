"""EAGLE-3 research checkpoints -> speculators `eagle3`.

Sources understood:
* SafeAILab EAGLE-3 / SpecForge: `midlayer.*` (renamed to `layers.0.*`), fc, norm, lm_head, d2t, t2d, and
  sometimes embed_tokens; config.json is a LlamaForCausalLMEagle3 config (vocab_size = verifier vocabulary,
  draft_vocab_size).
* NVIDIA Model-Optimizer exports: `layers.N.*` already, `eagle_config` in config.json with explicit
  `eagle_aux_hidden_state_layer_ids`; d2t without t2d; lm_head and embed_tokens may be absent; the draft's
  hidden size may differ from the verifier's (recorded as target_hidden_size).
Shapes are read from the tensors; config.json only adds what tensors cannot tell (rope, eps, activation).
"""

from __future__ import annotations

import re
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
from speculators_core.format.eagle3 import DEFAULT_NUM_AUX_LAYERS, Eagle3Config
from speculators_core.format.envelope import SpeculatorsConfig
from speculators_core.format.errors import CheckpointError, FormatError, IncompatibleError
from speculators_core.models.eagle3 import t2d_from_d2t

_LAYER = re.compile(r"^layers\.(\d+)\.")


@dataclass
class Eagle3Options:
    speculative_tokens: int = 3
    norm_before_residual: bool | None = None
    norm_output: bool | None = None
    aux_layer_ids: Sequence[int] | None = None
    ignore_tensors: Sequence[str] = field(default_factory=tuple)


def _aux_ids(ckpt: ResearchCheckpoint, opts: Eagle3Options) -> list[int] | None:
    if opts.aux_layer_ids is not None:
        return list(opts.aux_layer_ids)
    eagle_cfg = ckpt.config.get("eagle_config") or {}
    for source in (eagle_cfg, ckpt.config):
        ids = source.get("eagle_aux_hidden_state_layer_ids") if isinstance(source, dict) else None
        if ids:
            return [int(i) for i in ids]
    return None


def plan_eagle3(
    ckpt: ResearchCheckpoint, verifier: Verifier, opts: Eagle3Options, report: ConversionReport
) -> tuple[Eagle3Config, dict[str, torch.Tensor]]:
    """Speculators config and tensors of an EAGLE-3 research checkpoint (not yet checked against a model)."""
    src = str(ckpt.directory)
    cfg = ckpt.config
    if "speculators_model_type" in cfg:
        raise FormatError(
            f"{src}/config.json: already a speculators checkpoint; use it as is (speculators inspect)"
        )
    eagle_cfg = cfg.get("eagle_config") if isinstance(cfg.get("eagle_config"), dict) else {}
    if eagle_cfg.get("use_aux_hidden_state") is False:
        raise IncompatibleError(
            f"{src}/config.json: eagle_config.use_aux_hidden_state is false: an EAGLE-1 style head, not "
            "EAGLE-3; "
            "convert with --algorithm eagle"
        )
    state = drop_rotary_buffers(drop_ignored(dict(ckpt.state), opts.ignore_tensors, report), report)

    # Names: midlayer.* is SafeAILab's single layer.
    if any(k.startswith("midlayer.") for k in state):
        report.variant = "safeailab"
        renamed = {}
        for name, tensor in state.items():
            new = "layers.0." + name[len("midlayer.") :] if name.startswith("midlayer.") else name
            if new != name:
                report.renamed.append((name, new))
            renamed[new] = tensor
        state = renamed
    elif any(_LAYER.match(k) for k in state):
        report.variant = "nvidia" if eagle_cfg else "layers"
    else:
        raise CheckpointError(
            f"{src}: no midlayer.* or layers.N.* tensors: not an EAGLE-3 checkpoint (EAGLE-1/HASS: "
            "--algorithm eagle)"
        )
    if "fc.weight" not in state:
        raise CheckpointError(
            f"{src}: fc.weight is missing; every EAGLE-3 checkpoint fuses aux hidden states with fc"
        )
    if "fc.bias" in state:
        raise unexpected_error(
            src, ["fc.bias"], "EAGLE-3 (fc has no bias; is this EAGLE-1/HASS? use --algorithm eagle)"
        )

    fc = state["fc.weight"]
    hidden = int(fc.shape[0])
    if cfg.get("hidden_size") not in (None, hidden):
        raise CheckpointError(
            f"{src}: config.json hidden_size is {cfg['hidden_size']} but fc.weight has {hidden} rows; the "
            "config "
            "does not describe these weights"
        )
    aux_ids = _aux_ids(ckpt, opts)
    n_aux = len(aux_ids) if aux_ids else DEFAULT_NUM_AUX_LAYERS
    if fc.shape[1] % n_aux:
        raise CheckpointError(
            f"{src}: fc.weight takes {fc.shape[1]} inputs, not a multiple of {n_aux} aux layers; pass the "
            "verifier "
            "layer ids with --aux-layer-ids"
        )
    width = int(fc.shape[1]) // n_aux
    if width != verifier.hidden_size:
        raise IncompatibleError(
            f"{src}: fc.weight expects {n_aux} aux states of width {width} but the verifier {verifier.ref} "
            "has hidden "
            f"size {verifier.hidden_size}; this draft was trained for another verifier"
        )
    if aux_ids and max(aux_ids) > verifier.num_hidden_layers:
        raise IncompatibleError(
            f"aux layer ids {aux_ids} exceed the verifier's {verifier.num_hidden_layers} layers; check "
            "--aux-layer-ids"
        )
    if aux_ids is None:
        report.notes.append(
            "aux layer ids not recorded: vLLM will use its default (3 layers) at serving time"
        )

    vocab = verifier.vocab_size
    if (
        isinstance(cfg.get("vocab_size"), int)
        and isinstance(cfg.get("draft_vocab_size"), int)
        and cfg["vocab_size"] != vocab
    ):
        raise IncompatibleError(
            f"{src}/config.json: vocab_size {cfg['vocab_size']} (the verifier vocabulary it was trained "
            "with) differs "
            f"from the verifier {verifier.ref} vocab_size {vocab}; convert with the matching verifier"
        )
    for name in ("t2d", "embed_tokens.weight"):
        if name in state and state[name].shape[0] != vocab:
            raise IncompatibleError(
                f"{src}: {name} covers {state[name].shape[0]} tokens but the verifier {verifier.ref} has "
                f"{vocab}; "
                "convert with the verifier the draft was trained for"
            )

    # Draft vocabulary: lm_head rows, d2t length and config must agree.
    sizes = {}
    if "lm_head.weight" in state:
        sizes["lm_head.weight rows"] = int(state["lm_head.weight"].shape[0])
    if "d2t" in state:
        sizes["d2t length"] = int(state["d2t"].shape[0])
    if isinstance(cfg.get("draft_vocab_size"), int):
        sizes["config.json draft_vocab_size"] = int(cfg["draft_vocab_size"])
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{k} {v}" for k, v in sizes.items())
        raise CheckpointError(
            f"{src}: inconsistent draft vocabulary sizes ({detail}); fix config.json or the mapping"
        )
    draft_vocab = next(iter(sizes.values()), vocab)
    if draft_vocab > vocab:
        raise IncompatibleError(
            f"{src}: the draft vocabulary ({draft_vocab}) is larger than the verifier's ({vocab})"
        )

    if draft_vocab != vocab:
        if "d2t" not in state:
            raise CheckpointError(
                f"{src}: draft_vocab_size {draft_vocab} != verifier vocab {vocab} but there is no d2t "
                "tensor; "
                "add the draft-to-verifier mapping"
            )
        if "t2d" not in state:
            state["t2d"] = t2d_from_d2t(state["d2t"], vocab)
            report.filled.append(("t2d", "derived from d2t"))
        state["d2t"] = state["d2t"].long()
        state["t2d"] = state["t2d"].bool()
    else:
        for name in ("d2t", "t2d"):
            if name in state:
                t = state.pop(name)
                if name == "d2t" and bool(t.any()):
                    raise CheckpointError(
                        f"{src}: d2t permutes a full vocabulary; vLLM ignores the mapping when draft and "
                        "verifier "
                        "vocabularies are equal, so the draft would be served wrongly"
                    )
                report.dropped.append((name, "identity mapping (draft vocabulary = verifier vocabulary)"))

    if "lm_head.weight" not in state:
        head = verifier.tensor("lm_head")
        if draft_vocab == vocab and head is not None and tuple(head.shape) == (vocab, hidden):
            state["lm_head.weight"] = head
            report.filled.append(("lm_head.weight", f"verifier {verifier.ref} lm_head"))
        else:
            raise CheckpointError(f"{src}: lm_head.weight is missing and cannot be taken from the verifier")
    if "embed_tokens.weight" not in state:
        embed = verifier.tensor("embed")
        if embed is not None and tuple(embed.shape) == (vocab, hidden):
            state["embed_tokens.weight"] = embed
            report.filled.append(("embed_tokens.weight", f"verifier {verifier.ref} embeddings"))
        elif hidden != verifier.hidden_size:
            raise CheckpointError(
                f"{src}: embed_tokens.weight is missing and the draft hidden size ({hidden}) differs from "
                "the "
                f"verifier's ({verifier.hidden_size}): the embeddings cannot be shared; the checkpoint is "
                "incomplete"
            )
        else:
            report.absent.append(
                (
                    "embed_tokens.weight",
                    "vLLM shares the verifier's embeddings; verifier weights were not readable: "
                    f"{verifier.unavailable_reason}",
                )
            )

    layer_ids = sorted({int(m.group(1)) for k in state if (m := _LAYER.match(k))})
    if layer_ids != list(range(len(layer_ids))):
        raise CheckpointError(f"{src}: decoder layers {layer_ids} are not numbered 0..n-1")
    arch = "qwen3" if any(k.endswith("self_attn.q_norm.weight") for k in state) else "llama"
    gate = state.get("layers.0.mlp.gate_proj.weight")
    intermediate = int(gate.shape[0]) if gate is not None else None
    layer = _layer_config(
        cfg,
        verifier,
        arch=arch,
        hidden=hidden,
        vocab=vocab,
        num_layers=len(layer_ids),
        intermediate=intermediate,
    )

    norm_before_residual = opts.norm_before_residual
    if norm_before_residual is None:
        norm_before_residual = bool(cfg.get("norm_before_residual", False))
        report.notes.append(
            f"norm_before_residual={str(norm_before_residual).lower()} "
            "(research EAGLE-3 heads keep the raw hidden state as residual; override with "
            "--norm-before-residual)"
        )
    norm_output = opts.norm_output if opts.norm_output is not None else bool(cfg.get("norm_output", False))
    config = Eagle3Config(
        transformer_layer_config=layer,  # type: ignore[arg-type]
        draft_vocab_size=draft_vocab,
        norm_before_residual=norm_before_residual,
        target_hidden_size=None if width == hidden else width,
        eagle_aux_hidden_state_layer_ids=aux_ids,
        norm_before_fc="input_norm.weight" in state,
        fc_norm=any(k.startswith("fc_norm.") for k in state),
        norm_output=norm_output,
        speculators_config=SpeculatorsConfig.greedy(
            "eagle3", opts.speculative_tokens, verifier.ref, verifier.architectures
        ),
    )
    return config, state


def _layer_config(
    cfg: dict[str, Any],
    verifier: Verifier,
    *,
    arch: str,
    hidden: int,
    vocab: int,
    num_layers: int,
    intermediate: int | None,
) -> dict[str, Any]:
    from transformers import AutoConfig

    kwargs = llama_layer_kwargs(cfg, verifier)
    kwargs.update(hidden_size=hidden, vocab_size=vocab, num_hidden_layers=num_layers)
    if intermediate is not None:
        kwargs["intermediate_size"] = intermediate
    if hidden != verifier.hidden_size:
        # The verifier's head layout does not apply to a narrower/wider draft: the draft's config must say.
        for key in ("num_attention_heads",):
            if cfg.get(key) is None:
                raise CheckpointError(
                    f"config.json lacks {key}; it is needed because the draft hidden size ({hidden}) differs "
                    "from "
                    f"the verifier's ({verifier.hidden_size})"
                )
    if arch == "qwen3":
        kwargs.pop("mlp_bias", None)
    hf = AutoConfig.for_model(arch, **kwargs)
    data: dict[str, Any] = hf.to_diff_dict()
    data.pop("transformers_version", None)
    return data
