"""A checkpoint's summary: what `speculators inspect` prints and the operator reads (torch-free).

`describe_checkpoint(directory)` returns the `inspect --json` object (docs/architecture.md):
algorithm, method, speculative_tokens, verifier, vocab_size, draft_vocab_size, params, plus
speculators_model_type, hidden_size, num_layers, aux_layer_ids, dtype, vllm_serves and the serve command;
DFlash adds block_size, mask_token_id, target_layer_ids, and dflash2 its conv and selector sizes.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from speculators_core.format.dflash import DFlash2Config, DFlashConfig
from speculators_core.format.eagle import EagleConfig
from speculators_core.format.eagle3 import Eagle3Config
from speculators_core.format.envelope import SpeculatorModelConfig
from speculators_core.format.io import load_config
from speculators_core.format.registry import get_speculator_type
from speculators_core.format.safetensors_header import FLOAT_DTYPES, checkpoint_tensors

VLLM_CANNOT_SERVE = "vLLM 0.33 cannot serve speculators_model_type {type!r}; {hint}"
_HINTS = {
    "eagle": "retrain as eagle3 (speculators train --algorithm eagle3) to serve it",
    "mtp": "stitch the head back into the verifier (upstream `speculators stitch-mtp`) and use vLLM's MTP",
}


def count_params(directory: str | os.PathLike[str]) -> tuple[int, int, str | None]:
    """(all floating-point elements, the same without the frozen embed_tokens copy, main dtype)."""
    infos = checkpoint_tensors(directory)
    floats = [t for t in infos.values() if t.dtype in FLOAT_DTYPES]
    total = sum(t.numel for t in floats)
    embed = sum(t.numel for t in floats if t.name.endswith("embed_tokens.weight"))
    dtype = Counter(t.dtype for t in floats).most_common(1)[0][0] if floats else None
    return total, total - embed, dtype


def describe_config(config: SpeculatorModelConfig) -> dict[str, Any]:
    """The config-only part of the summary."""
    entry = get_speculator_type(config.speculators_model_type)
    vocab, draft_vocab = config.vocab_sizes()
    out: dict[str, Any] = {
        "speculators_model_type": config.speculators_model_type,
        "algorithm": config.algorithm,
        "method": entry.method,
        "speculative_tokens": config.speculative_tokens,
        "verifier": config.verifier_name_or_path,
        "verifier_architectures": list(config.speculators_config.verifier.architectures),
        "vocab_size": vocab,
        "draft_vocab_size": draft_vocab,
        "vllm_serves": entry.vllm_serves,
    }
    if isinstance(config, Eagle3Config | EagleConfig):
        out["hidden_size"] = config.hidden_size
        out["num_layers"] = config.transformer_layer_config.num_hidden_layers
        out["draft_arch"] = config.transformer_layer_config.model_type
    if isinstance(config, Eagle3Config):
        out["aux_layer_ids"] = config.eagle_aux_hidden_state_layer_ids
        out["target_hidden_size"] = config.verifier_hidden_size
    if isinstance(config, DFlashConfig):
        out["hidden_size"] = config.hidden_size
        out["num_layers"] = config.transformer_layer_config.num_hidden_layers
        out["draft_arch"] = config.transformer_layer_config.model_type
        out["aux_layer_ids"] = config.aux_hidden_state_layer_ids
        out["target_layer_ids"] = config.target_layer_ids  # what vLLM reads (aux - 1)
        out["target_hidden_size"] = config.verifier_hidden_size
        out["block_size"] = config.block_size
        out["mask_token_id"] = config.mask_token_id
        out["sample_from_anchor"] = config.sample_from_anchor
        out["max_speculative_tokens"] = config.max_speculative_tokens
    if isinstance(config, DFlash2Config):
        out["conv_kernel_size"] = config.conv_kernel_size
        out["conv_group_size"] = config.conv_group_size
        out["selector_rank"] = config.selector_rank
        out["selector_top_k"] = config.selector_top_k
    return out


def serve_command(config: SpeculatorModelConfig, draft: str) -> tuple[list[str] | None, str]:
    """(argv, explanation): the command vLLM 0.33 serves this draft with, or None and why not."""
    # Imported here: serving imports format.errors, so a module-level import would be circular.
    from speculators_core.serving import build_serve_argv_for, short_form_applies

    entry = get_speculator_type(config.speculators_model_type)
    if not entry.vllm_serves or entry.method is None:
        hint = _HINTS.get(entry.name, "no vLLM release serves it")
        return None, VLLM_CANNOT_SERVE.format(type=entry.name, hint=hint)
    verifier = config.verifier_name_or_path
    argv = build_serve_argv_for(verifier, draft, entry.method, config.speculative_tokens)
    if short_form_applies(verifier):
        why = "short form: the verifier is a remote hub id, vLLM reads it from the draft's config.json"
    else:
        why = (
            "long form: the verifier is a local path, which vLLM 0.33 rejects in the short form "
            "(`vllm serve DRAFT`)"
        )
    return argv, why


def describe_checkpoint(directory: str | os.PathLike[str], *, draft_ref: str | None = None) -> dict[str, Any]:
    """Summary of a local checkpoint directory; `draft_ref` is how the serve command names the draft."""
    d = Path(directory)
    config = load_config(d)
    out = describe_config(config)
    params, params_no_embed, dtype = count_params(d)
    out["params"] = params
    out["params_without_embeddings"] = params_no_embed
    out["dtype"] = dtype
    argv, why = serve_command(config, draft_ref or str(d))
    out["vllm_serve"] = argv
    from speculators_core.serving import format_command

    out["vllm_serve_command"] = format_command(argv) if argv else None
    out["vllm_serve_note"] = why
    return out
