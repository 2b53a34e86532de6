"""`speculators eval`: offline acceptance of a draft (ours or upstream speculators') on held-out prompts."""

from __future__ import annotations

import argparse

from speculators_core.cli.common import ExitCode, Progress, emit_json_line, write_summary

NAME = "eval"
HELP = "offline speculative decoding (greedy or sampled verification): acceptance length, per-position rates"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verifier", required=True, metavar="V", help="verifier directory or hub id")
    parser.add_argument(
        "--draft", required=True, metavar="DIR", help="speculators-format draft (directory or hub id)"
    )
    parser.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="prepare-data output (held-out split) or a raw dataset source",
    )
    parser.add_argument(
        "--num-speculative-tokens", type=int, metavar="K", help="k (default: the draft's config)"
    )
    parser.add_argument(
        "--max-speculative-tokens",
        type=int,
        metavar="M",
        help="drafts proposed per step (>= k, default k); the summary's *_by_k keys cover k = 1..M",
    )
    parser.add_argument("--max-samples", type=int, default=64, help="prompts to decode (default 64)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=128, help="tokens generated per prompt (default 128)"
    )
    parser.add_argument(
        "--split", default="heldout", choices=("heldout", "train"), help="prepared split (default heldout)"
    )
    parser.add_argument(
        "--draft-cost-ratio",
        type=float,
        help="draft/verifier cost per forward (default: from parameter counts)",
    )
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--revision", help="hub revision of the verifier")
    parser.add_argument(
        "--prompt-set",
        metavar="FILE",
        help="fixed evaluation prompts (JSONL): read if the file exists (--data is then unused), "
        "else built from --data and saved there",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="0 (default): greedy verification; > 0: sampled at this temperature with vLLM's rejection "
        "sampling of greedy drafts (what a draft gets when served at that temperature)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the sampling's random draws (--temperature > 0)")
    parser.add_argument("--summary-path", metavar="F", help="write the summary JSON here")


def run(args: argparse.Namespace) -> int:
    from speculators_core.data.errors import cli_errors
    from speculators_core.eval.run import EvalConfig, run_eval

    progress = Progress("eval", total=args.max_samples, unit="prompts")
    with cli_errors():
        summary = run_eval(
            EvalConfig(
                verifier=args.verifier,
                draft=args.draft,
                data=args.data,
                k=args.num_speculative_tokens,
                max_k=args.max_speculative_tokens,
                max_samples=args.max_samples,
                max_new_tokens=args.max_new_tokens,
                split=args.split,
                draft_cost_ratio=args.draft_cost_ratio,
                device=args.device,
                revision=args.revision,
                prompt_set=args.prompt_set,
                temperature=args.temperature,
                seed=args.seed,
            ),
            on_progress=lambda n, fields: progress.update(n, **fields),
        )
    write_summary(args.summary_path, summary)
    emit_json_line({"event": "done", **summary})
    return ExitCode.OK
