"""`speculators inspect DIR [--json]`: what a speculators checkpoint is and how vLLM serves it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from speculators_core.cli.common import ExitCode, TransientError, UserError, write_summary

NAME = "inspect"
HELP = "show a speculators checkpoint: algorithm, verifier, k, vocab sizes, parameters, vllm serve command"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="DIR", help="speculators checkpoint directory (or hub id)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (what the operator reads)")
    parser.add_argument("--revision", help="hub revision when DIR is a hub id")
    parser.add_argument("--summary-path", metavar="F", help="also write the JSON summary here")


def _human(info: dict[str, object]) -> str:
    vocab, draft = info.get("vocab_size"), info.get("draft_vocab_size")
    lines = [
        f"algorithm:          {info['algorithm']} (speculators_model_type {info['speculators_model_type']}, "
        f"method {info['method']})",
        f"verifier:           {info['verifier']}",
        f"speculative tokens: {info['speculative_tokens']}",
        f"vocab:              verifier {vocab}, draft {draft}",
        f"parameters:         {info['params']:,} ({info['params_without_embeddings']:,} without the "
        "embedding copy), "
        f"{info['dtype']}",
    ]
    if "num_layers" in info:
        lines.append(
            f"draft layers:       {info['num_layers']} x {info['draft_arch']}, hidden {info['hidden_size']}"
        )
    if info.get("aux_layer_ids") is not None or "target_hidden_size" in info:
        lines.append(f"aux layers:         {info.get('aux_layer_ids') or 'vLLM default'}")
    if "block_size" in info:
        anchor = (
            "sampled from the anchor too" if info["sample_from_anchor"] else "the anchor is the bonus token"
        )
        lines.append(
            f"block:              {info['block_size']} tokens per pass ({anchor}: at most "
            f"{info['max_speculative_tokens']} drafted), mask token {info['mask_token_id']}"
        )
    if "conv_kernel_size" in info:
        lines.append(
            f"local convolution:  {info['conv_kernel_size']} taps around each layer's attention and MLP, "
            f"one kernel per {info['conv_group_size']} channels"
        )
        lines.append(
            f"candidate selector: rank {info['selector_rank']}, reranks the unary "
            f"top-{info['selector_top_k']} of each drafted token"
        )
    lines.append("")
    if info.get("vllm_serve_command"):
        lines.append(f"serve with vLLM ({info['vllm_serve_note']}):")
        lines.append(f"  {info['vllm_serve_command']}")
    else:
        lines.append(str(info["vllm_serve_note"]))
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from speculators_core.format import describe_checkpoint
    from speculators_core.format.errors import SourceUnavailableError, SpeculatorsError

    path = Path(args.path)
    try:
        if path.exists():
            directory = path
        else:
            from speculators_core.models.hub import snapshot

            directory = snapshot(
                args.path, allow_patterns=("config.json", "*.safetensors", "*.json"), revision=args.revision
            )
        info = describe_checkpoint(directory, draft_ref=args.path)
    except SourceUnavailableError as exc:
        raise TransientError(str(exc)) from None
    except SpeculatorsError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        sys.stdout.write(json.dumps(info, separators=(",", ":"), sort_keys=True) + "\n")
    else:
        sys.stdout.write(_human(info))
    write_summary(args.summary_path, info)
    return int(ExitCode.OK)
