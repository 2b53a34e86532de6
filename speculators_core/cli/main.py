"""Entry point of the `speculators` CLI.

Each command lives in `speculators_core.cli.<module>` and exposes:
    NAME: str                      the sub-command name
    HELP: str                      one line for `speculators --help`
    add_arguments(parser) -> None  declares its flags (must import nothing heavy)
    run(args) -> int               does the work; heavy imports (torch) go inside run()
Command modules must stay cheap to import so `speculators --version` and `--help` are instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from speculators_core.cli.common import ExitCode, UserError, report_error
from speculators_core.version import __version__

# Order is the order of `speculators --help`. A module that does not exist yet is skipped.
COMMAND_MODULES = (
    "fetch",
    "prepare_data",
    "datagen",
    "train",
    "eval",
    "publish",
    "convert",
    "inspect",
    "capture_proxy",
    "benchmark",
    "report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speculators",
        description="Train, convert, evaluate and inspect speculative-decoding draft models "
        "(speculators format).",
    )
    parser.add_argument("--version", action="version", version=f"speculators {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"speculators_core.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"speculators_core.cli.{module_name}":
                continue
            raise
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    try:
        return int(args._run(args))
    except UserError as exc:
        return report_error(exc)
    except KeyboardInterrupt:
        return ExitCode.TRANSIENT


if __name__ == "__main__":
    sys.exit(main())
