"""Errors shared by the format, model, conversion and serving code (torch-free).

Every message names the file, tensor or field at fault and says how to fix it. The CLI maps the
classes onto exit codes: `IncompatibleError` is permanent (3), `SourceUnavailableError` transient (75),
every other `SpeculatorsError` is invalid input (2).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError


class SpeculatorsError(ValueError):
    """Base class: an input the user can fix."""


class FormatError(SpeculatorsError):
    """A `config.json` that is not a valid speculators config."""


class CheckpointError(SpeculatorsError):
    """Weights that cannot be read or do not fit the config (missing, unexpected, wrong shape, corrupt)."""


class IncompatibleError(SpeculatorsError):
    """A draft that does not fit its verifier (vocabulary, hidden size)."""


class SourceUnavailableError(SpeculatorsError):
    """A hub id that could not be fetched (network, rate limit, offline): worth retrying."""


def _loc(loc: Iterable[Any]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            # pydantic puts function-validator names in loc; they name no field.
            if str(item).startswith("function-"):
                continue
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem: `field: message (got value)`."""
    lines = []
    for err in exc.errors(include_url=False):
        where = _loc(err.get("loc", ()))
        msg = err.get("msg", "invalid")
        msg = msg.removeprefix("Value error, ")
        got = err.get("input")
        shown = (
            ""
            if err.get("type") in ("missing", "value_error") or isinstance(got, dict)
            else f" (got {got!r})"
        )
        lines.append(f"{where}: {msg}{shown}" if where else f"{msg}{shown}")
    return "; ".join(lines)


def format_error(source: str, exc: ValidationError) -> FormatError:
    """Wrap a pydantic error into a FormatError that names the file and every bad field."""
    return FormatError(f"{source}: {describe_validation_error(exc)}")
