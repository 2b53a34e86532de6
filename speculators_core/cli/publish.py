"""`speculators publish DIR --to s3://bucket/prefix|hf://org/repo [--private]`."""

from __future__ import annotations

import argparse

from speculators_core.cli.common import ExitCode, UserError, emit_json_line, write_summary

NAME = "publish"
HELP = "upload a trained speculator to S3 or the Hugging Face hub"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="speculators-format directory (train --output)")
    parser.add_argument("--to", required=True, metavar="URI", help="s3://bucket/prefix or hf://org/repo")
    parser.add_argument("--private", action="store_true", help="hf://: create the repository private")
    parser.add_argument("--summary-path", metavar="F", help="write the summary JSON here")


def run(args: argparse.Namespace) -> int:
    from speculators_core.data.errors import cli_errors
    from speculators_core.fetch import publish
    from speculators_core.sources import SourceError

    try:
        with cli_errors():
            uri = publish(args.directory, args.to, private=args.private)
    except SourceError as exc:
        raise UserError(str(exc)) from None
    summary = {"step": "publish", "uri": uri}
    write_summary(args.summary_path, summary)
    emit_json_line({"event": "done", **summary})
    return ExitCode.OK
