"""`speculators fetch SOURCE --dest DIR`: download hf:// or s3:// sources; check pvc:// and local paths."""

from __future__ import annotations

import argparse

from speculators_core.cli.common import ExitCode, UserError, emit_json_line, write_summary

NAME = "fetch"
HELP = "download a model or dataset (hf://, s3://) or check a pvc:// / local path (init containers)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", metavar="SOURCE", help="hf://org/name, s3://bucket/prefix, pvc://claim/path or a path"
    )
    parser.add_argument("--dest", metavar="DIR", help="destination directory (required for hf:// and s3://)")
    parser.add_argument("--revision", help="hub revision (hf:// only)")
    parser.add_argument("--summary-path", metavar="F", help="write the summary JSON here")


def run(args: argparse.Namespace) -> int:
    from speculators_core.data.errors import cli_errors
    from speculators_core.fetch import fetch
    from speculators_core.sources import SourceError

    try:
        with cli_errors():
            result = fetch(args.source, args.dest, revision=args.revision)
    except SourceError as exc:
        raise UserError(str(exc)) from None
    summary = {"step": "fetch", "path": str(result.path), "files": result.files, "bytes": result.bytes}
    write_summary(args.summary_path, summary)
    emit_json_line({"event": "done", **summary})
    return ExitCode.OK
