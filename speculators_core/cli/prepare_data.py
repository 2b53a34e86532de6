"""`speculators prepare-data`: chat datasets -> token ids, assistant loss masks, token frequencies."""

from __future__ import annotations

import argparse
from pathlib import Path

from speculators_core.cli.common import ExitCode, Progress, write_summary

NAME = "prepare-data"
HELP = "tokenize chat datasets with the verifier's chat template, masking assistant turns"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verifier", required=True, metavar="V", help="verifier directory or hub id (its tokenizer)"
    )
    parser.add_argument(
        "--data",
        required=True,
        action="append",
        metavar="SRC",
        help=".json/.jsonl file, datasets save_to_disk dir, or hf://org/name[?split=&config=] (repeatable)",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--max-length", type=int, default=2048, help="maximum tokens per sample (default 2048)"
    )
    parser.add_argument(
        "--long-samples",
        choices=("truncate", "skip"),
        default="truncate",
        help="samples longer than --max-length: truncate (counted) or skip (counted); default truncate",
    )
    parser.add_argument("--max-samples", type=int, help="stop after N usable conversations")
    parser.add_argument(
        "--regenerate-responses",
        action="store_true",
        help="replace assistant turns by the verifier's own replies (on-policy data)",
    )
    parser.add_argument("--endpoint", metavar="URL", help="OpenAI-compatible server (vLLM) for regeneration")
    parser.add_argument("--regen-max-tokens", type=int, default=1024, help="max tokens per regenerated reply")
    parser.add_argument(
        "--regen-retries", type=int, default=4, help="endpoint retries (with backoff) per request"
    )
    parser.add_argument(
        "--regen-temperature", type=float, default=0.0, help="sampling temperature (0 = greedy)"
    )
    parser.add_argument(
        "--reasoning",
        choices=("keep", "strip"),
        default="keep",
        help="<think> blocks of assistant turns: keep (trained on) or strip (removed); default keep",
    )
    parser.add_argument("--holdout-fraction", type=float, default=0.05, help="held-out share (default 0.05)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--revision", help="hub revision of the verifier")
    parser.add_argument("--summary-path", metavar="F", help="write the summary JSON here")


def run(args: argparse.Namespace) -> int:
    from speculators_core.data.errors import cli_errors
    from speculators_core.data.prepare import PrepareConfig, prepare

    progress = Progress("prepare", total=None, unit="rows")
    with cli_errors():
        cfg = PrepareConfig(
            verifier=args.verifier,
            data=list(args.data),
            output=Path(args.output),
            max_length=args.max_length,
            max_samples=args.max_samples,
            regenerate=args.regenerate_responses,
            endpoint=args.endpoint,
            reasoning=args.reasoning,
            holdout_fraction=args.holdout_fraction,
            seed=args.seed,
            long_samples=args.long_samples,
            regen_max_tokens=args.regen_max_tokens,
            regen_temperature=args.regen_temperature,
            regen_retries=args.regen_retries,
            revision=args.revision,
        )
        meta = prepare(cfg, on_progress=lambda rows, fields: progress.update(rows - progress.done, **fields))
    summary = {
        "step": "prepare",
        "samples": meta["train"]["samples"],
        "tokens": meta["train"]["tokens"],
        "assistant_tokens": meta["train"]["assistant_tokens"],
        "heldout": meta["heldout"]["samples"],
        "rows": meta["rows"],
        "skipped": meta["skipped"],
        "truncated": meta["stats"].get("truncated", 0),
        "output": str(cfg.output),
        "reused": bool(meta.get("reused")),
    }
    write_summary(args.summary_path, summary)
    from speculators_core.cli.common import emit_json_line

    emit_json_line({"event": "done", **summary})
    return ExitCode.OK
