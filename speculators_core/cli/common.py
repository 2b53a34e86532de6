"""What every command shares: exit codes, user-facing errors, the summary file, progress lines.

Exit codes are a contract with the operator's Job podFailurePolicy (docs/architecture.md):
permanent failures fail the Job at once, everything else is retried up to the backoff limit.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Kubernetes keeps at most 4096 bytes of a container's termination message.
TERMINATION_MESSAGE_LIMIT = 4096


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1  # unexpected: retried
    USAGE = 2  # invalid flags, spec or input: permanent
    INCOMPATIBLE = 3  # incompatible model or data: permanent
    TRANSIENT = 75  # network, rate limit, interrupted: retried (EX_TEMPFAIL)


class UserError(Exception):
    """An error the user can fix; the message names the field/file and the fix."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class IncompatibleError(UserError):
    exit_code = ExitCode.INCOMPATIBLE


class TransientError(UserError):
    exit_code = ExitCode.TRANSIENT


def report_error(exc: UserError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return int(exc.exit_code)


def write_summary(path: str | os.PathLike[str] | None, summary: dict[str, Any]) -> None:
    """Write the command's summary JSON (compact; it becomes the pod's termination message).

    Written to a temporary file then renamed, so a reader never sees half a file. Long lists are
    trimmed until the text fits the termination-message limit.
    """
    if not path:
        return
    text = _fit_termination_message(summary)
    target = Path(path)
    if target.parent.as_posix() == "/dev" or target.is_char_device():
        # /dev/termination-log is a bind-mounted file; it cannot be replaced by rename.
        target.write_text(text)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, target)


def _fit_termination_message(summary: dict[str, Any]) -> str:
    """Compact JSON under the termination-message limit; long lists are cut first, then extra keys."""

    def dump(obj: dict[str, Any]) -> str:
        return json.dumps(obj, separators=(",", ":"), sort_keys=True, default=str)

    text = dump(summary)
    if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT:
        return text
    trimmed = {k: (v[:16] if isinstance(v, list) else v) for k, v in summary.items()}
    trimmed["truncated"] = True
    # Drop the largest non-essential values until it fits; "step" identifies the summary and stays.
    while len(dump(trimmed).encode()) > TERMINATION_MESSAGE_LIMIT:
        droppable = [k for k in trimmed if k not in ("step", "truncated")]
        if not droppable:
            break
        del trimmed[max(droppable, key=lambda k: len(dump({k: trimmed[k]})))]
    return dump(trimmed)


class Progress:
    """Progress as a human bar on a terminal, as JSON lines otherwise (logs of a Job pod)."""

    def __init__(self, step: str, total: int | None, unit: str = "it", stream: Any = None) -> None:
        self.step = step
        self.total = total
        self.unit = unit
        self.done = 0
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0

    def update(self, n: int = 1, **fields: Any) -> None:
        self.done += n
        now = time.monotonic()
        final = self.total is not None and self.done >= self.total
        if not final and now - self._last < (0.2 if self.tty else 5.0):
            return
        self._last = now
        if self.tty:
            total = f"/{self.total}" if self.total else ""
            extra = " ".join(f"{k}={v}" for k, v in fields.items())
            self.stream.write(f"\r{self.step}: {self.done}{total} {self.unit} {extra}")
            if final:
                self.stream.write("\n")
        else:
            record = {"event": "progress", "step": self.step, "done": self.done, "total": self.total}
            record.update(fields)
            self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


def emit_json_line(record: dict[str, Any], stream: Any = None) -> None:
    """One JSON object per line on stdout: metrics and events that log collectors can parse."""
    stream = stream or sys.stdout
    stream.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
    stream.flush()


def layer_ids_arg(text: str) -> list[int]:
    """argparse type of --layer-ids / --aux-layer-ids: comma-separated verifier layer ids."""
    try:
        ids = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected comma-separated layer ids, e.g. 2,16,29"
        ) from None
    if not ids:
        raise argparse.ArgumentTypeError("expected at least one layer id")
    return ids
