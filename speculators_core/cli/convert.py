"""`speculators convert SRC --verifier V --algorithm eagle3|eagle|dflash [--output DIR] [--validate]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speculators_core.cli.common import (
    ExitCode,
    IncompatibleError,
    TransientError,
    UserError,
    layer_ids_arg,
    write_summary,
)

NAME = "convert"
HELP = "convert a research EAGLE-3 or EAGLE-1/HASS checkpoint into the speculators format"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", metavar="SRC", help="checkpoint directory, weight file (.safetensors/.bin) or hub id"
    )
    parser.add_argument("--verifier", required=True, metavar="V", help="verifier directory or hub id")
    parser.add_argument(
        "--algorithm", required=True, choices=("eagle3", "eagle", "dflash"), help="source algorithm"
    )
    parser.add_argument(
        "--output", metavar="DIR", help="output directory (default: ./<SRC name>-<algorithm>)"
    )
    parser.add_argument("--validate", action="store_true", help="load the result and run a forward pass")
    parser.add_argument(
        "--speculative-tokens",
        type=int,
        metavar="K",
        help="k written to the config (default 3; dflash block-1)",
    )
    parser.add_argument(
        "--norm-before-residual",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="eagle3: residual is the normed hidden state (default: from the source config, else false)",
    )
    parser.add_argument(
        "--norm-output",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="eagle3: later steps are fed the post-norm state (default: from the source config, else false)",
    )
    parser.add_argument(
        "--aux-layer-ids",
        type=layer_ids_arg,
        metavar="I,J,K",
        help="eagle3, dflash: verifier aux layer ids (dflash default: z-lab's target_layer_ids + 1)",
    )
    parser.add_argument("--mask-token-id", type=int, help="dflash: the MASK token (default: dflash_config's)")
    parser.add_argument(
        "--ignore-tensor",
        action="append",
        default=[],
        metavar="NAME",
        help="drop source tensors (glob; repeatable)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    parser.add_argument("--revision", help="hub revision of SRC")
    parser.add_argument("--verifier-revision", help="hub revision of the verifier")
    parser.add_argument("--summary-path", metavar="F", help="write the summary JSON here")


def default_output(source: str, algorithm: str) -> Path:
    name = source.rstrip("/").split("/")[-1] or "checkpoint"
    name = name.rsplit(".", 1)[0] if name.endswith((".safetensors", ".bin")) else name
    return Path.cwd() / f"{name}-{algorithm}"


def run(args: argparse.Namespace) -> int:
    from speculators_core.convert import convert_checkpoint
    from speculators_core.format.errors import IncompatibleError as FormatIncompatible
    from speculators_core.format.errors import SourceUnavailableError, SpeculatorsError

    output = Path(args.output) if args.output else default_output(args.source, args.algorithm)
    try:
        report = convert_checkpoint(
            args.source,
            args.verifier,
            args.algorithm,
            output,
            validate=args.validate,
            speculative_tokens=args.speculative_tokens,
            norm_before_residual=args.norm_before_residual,
            norm_output=args.norm_output,
            aux_layer_ids=args.aux_layer_ids,
            ignore_tensors=args.ignore_tensor,
            mask_token_id=args.mask_token_id,
            overwrite=args.overwrite,
            revision=args.revision,
            verifier_revision=args.verifier_revision,
        )
    except FormatIncompatible as exc:
        raise IncompatibleError(str(exc)) from None
    except SourceUnavailableError as exc:
        raise TransientError(str(exc)) from None
    except SpeculatorsError as exc:
        raise UserError(str(exc)) from None
    out = sys.stdout
    out.write(f"converted {args.source} ({report.variant}) -> {report.output}\n")
    for old, new in report.renamed:
        out.write(f"  renamed {old} -> {new}\n")
    for name, why in report.dropped:
        out.write(f"  dropped {name}: {why}\n")
    for name, why in report.filled:
        out.write(f"  filled  {name}: {why}\n")
    for name, why in report.absent:
        out.write(f"  absent  {name}: {why}\n")
    for note in report.notes:
        out.write(f"  note: {note}\n")
    if report.validation:
        v = report.validation
        shape = f"{v['ttt_steps']} steps" if "ttt_steps" in v else f"blocks of {v['block_size']}"
        out.write(f"  validated: forward ok ({shape}, {v['borrowed_tensors']})\n")
    out.write(f"inspect it with: speculators inspect {report.output}\n")
    write_summary(args.summary_path, report.summary())
    return int(ExitCode.OK)
