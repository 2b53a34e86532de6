"""`speculators datagen`: the verifier's aux + last hidden states for prepared data, one shard per worker."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from speculators_core.cli.common import (
    ExitCode,
    Progress,
    UserError,
    emit_json_line,
    layer_ids_arg,
    write_summary,
)

NAME = "datagen"
HELP = "generate the verifier's hidden states (safetensors shards) for prepared data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verifier", required=True, metavar="V", help="verifier directory or hub id")
    parser.add_argument("--data", required=True, metavar="DIR", help="prepare-data output directory")
    parser.add_argument(
        "--output", required=True, metavar="DIR", help="hidden-states directory (shared by workers)"
    )
    parser.add_argument("--num-shards", type=int, default=1, help="number of workers (default 1)")
    parser.add_argument(
        "--shard-index",
        type=int,
        default=None,
        help="this worker's shard (default: $JOB_COMPLETION_INDEX, else 0)",
    )
    parser.add_argument(
        "--layer-ids", type=layer_ids_arg, metavar="I,J,K", help="aux layers (default 2,L//2,L-3)"
    )
    parser.add_argument(
        "--dtype",
        choices=("bfloat16", "float8", "float32"),
        default="bfloat16",
        help="storage dtype (float8: e4m3 with per-token scales, half the disk); default bfloat16",
    )
    parser.add_argument("--batch-tokens", type=int, default=16384, help="padded tokens per verifier forward")
    parser.add_argument(
        "--chunk-tokens", type=int, default=32768, help="tokens per chunk file (restart granularity)"
    )
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--revision", help="hub revision of the verifier")
    parser.add_argument("--summary-path", metavar="F", help="write the summary JSON here")


def run(args: argparse.Namespace) -> int:
    from speculators_core.data.datagen import DatagenConfig, run_datagen, shard_samples
    from speculators_core.data.errors import cli_errors

    index = args.shard_index
    if index is None:
        env = os.environ.get("JOB_COMPLETION_INDEX", "0")
        try:
            index = int(env)
        except ValueError:
            raise UserError(f"JOB_COMPLETION_INDEX={env!r} is not an integer; pass --shard-index") from None
    with cli_errors():
        cfg = DatagenConfig(
            verifier=args.verifier,
            data=Path(args.data),
            output=Path(args.output),
            num_shards=args.num_shards,
            shard_index=index,
            layer_ids=args.layer_ids,
            dtype=args.dtype,
            batch_tokens=args.batch_tokens,
            chunk_tokens=args.chunk_tokens,
            revision=args.revision,
            device=args.device,
        )
        cfg.validate()
        progress = Progress("datagen", total=shard_samples(cfg.data, index, cfg.num_shards), unit="samples")
        result = run_datagen(cfg, on_progress=lambda n, fields: progress.update(n, **fields))
    summary = {
        "step": "datagen",
        "shard": result["shard"],
        "num_shards": result["num_shards"],
        "samples": result["samples"],
        "tokens": result["tokens"],
        "bytes": result["bytes"],
        "layer_ids": result["layer_ids"],
        "reused": result["reused"],
        "chunks_reused": result.get("chunks_reused", 0),
        "seconds": result.get("seconds"),
    }
    write_summary(args.summary_path, summary)
    emit_json_line({"event": "done", **summary})
    return ExitCode.OK
