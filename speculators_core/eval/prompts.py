"""Evaluation prompts: the held-out split of prepare-data, or the first user turn(s) of a raw dataset.

A prompt is everything before the first assistant token (what the verifier sees when it starts its
first reply), so prompts carry the chat template's generation prefix.

A prompt set (`--prompt-set FILE`) fixes the prompts across evaluations: the first evaluation builds it from
`--data` and writes it (JSONL: a header line, then one `{"input_ids": [...]}` per prompt); later ones read
it, so a new draft is compared with the old one on the same prompts. It is created with a hard link from a
complete temporary file, so concurrent creators never overwrite each other and readers never see half a file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speculators_core.data.errors import IncompatibleDataError, InputError
from speculators_core.data.fsutil import disk_full, is_disk_full
from speculators_core.data.prepare import META
from speculators_core.data.store import TokenStore


def prompts_from_prepared(directory: Path, split: str, max_samples: int | None) -> list[list[int]]:
    store = TokenStore(directory / split)
    prompts: list[list[int]] = []
    for i in range(len(store)):
        ids, mask = store[i]
        first = int(np.argmax(mask > 0)) if mask.any() else 0
        if first > 0:
            prompts.append(ids[:first].tolist())
        if max_samples is not None and len(prompts) >= max_samples:
            break
    return prompts


def prompts_from_source(src: str, tokenizer: Any, max_samples: int | None) -> list[list[int]]:
    from speculators_core.data.loading import iter_rows

    prompts: list[list[int]] = []
    for row in iter_rows(src):
        if row.messages is None:
            continue
        first = next(i for i, m in enumerate(row.messages) if m["role"] == "assistant")
        enc = tokenizer.apply_chat_template(
            row.messages[:first], tokenize=True, add_generation_prompt=True, return_dict=True
        )
        prompts.append(list(enc["input_ids"]))
        if max_samples is not None and len(prompts) >= max_samples:
            break
    return prompts


def load_prompts(
    data: str, tokenizer: Any, *, split: str = "heldout", max_samples: int | None = None
) -> list[list[int]]:
    path = Path(data)
    if (path / META).exists():
        prompts = prompts_from_prepared(path, split, max_samples)
    else:
        prompts = prompts_from_source(data, tokenizer, max_samples)
    if not prompts:
        raise InputError(
            f"--data {data}: no evaluation prompt found (held-out split empty?); add data or lower --holdout"
        )
    return prompts


PROMPT_SET_FORMAT = "speculators-eval-prompts/v1"
_REBUILD = "delete it to rebuild it from --data (earlier evaluations on it are then not comparable)"


def prompts_digest(prompts: Sequence[Sequence[int]]) -> str:
    """First 16 hex digits of sha256 over the compact JSON of the prompt list (equal digest: same prompts)."""
    text = json.dumps([list(map(int, p)) for p in prompts], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _bad_ids(ids: Any, vocab_size: int) -> str | None:
    """Why `ids` is not a prompt of this vocabulary, or None."""
    if not isinstance(ids, list) or not ids:
        return "input_ids is not a non-empty list"
    for t in ids:
        # bool is an int subclass; true/false in the file is corruption, not a token id
        if not isinstance(t, int) or isinstance(t, bool):
            return f"token id {t!r} is not an integer"
        if not 0 <= t < vocab_size:
            return f"token id {t} is outside the verifier's vocabulary [0, {vocab_size})"
    return None


def read_prompt_set(path: str | os.PathLike[str], vocab_size: int) -> list[list[int]]:
    """The prompts of a prompt-set file, validated against the verifier's vocabulary size."""

    def bad(what: str) -> InputError:
        return InputError(f"--prompt-set {path}: {what}; {_REBUILD}")

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(f"cannot be read ({exc})") from None
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != PROMPT_SET_FORMAT:
        raise bad(
            f'is not a prompt set (the first line must be a {{"format": "{PROMPT_SET_FORMAT}", ...}} header)'
        )
    if header.get("vocab_size") != vocab_size:
        raise bad(
            f"was built for a vocabulary of {header.get('vocab_size')!r}, the verifier has {vocab_size}"
        )
    prompts: list[list[int]] = []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise bad(f"line {n} is not JSON") from None
        ids = row.get("input_ids") if isinstance(row, dict) else None
        problem = _bad_ids(ids, vocab_size)
        if problem:
            raise bad(f"line {n}: {problem}")
        prompts.append(ids)
    if not prompts or header.get("count") != len(prompts):
        # A count mismatch means a truncated or hand-edited file: not the set earlier runs used.
        raise bad(f"holds {len(prompts)} prompts, its header says {header.get('count')!r}")
    return prompts


def write_prompt_set(
    path: str | os.PathLike[str], prompts: Sequence[Sequence[int]], vocab_size: int
) -> tuple[list[list[int]], bool]:
    """Create the prompt-set file unless it exists; returns (its prompts, whether this call wrote it).

    A concurrent writer that got there first wins: its file is kept and its prompts are returned.
    """
    rows = [list(map(int, p)) for p in prompts]
    for i, ids in enumerate(rows):
        problem = _bad_ids(ids, vocab_size)
        if problem:
            # Tokenizer and verifier disagree: a set written now would be rejected by every later run.
            raise IncompatibleDataError(f"--data prompt {i}: {problem}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.tmp-")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; later trainings' eval pods read it
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            header = {"format": PROMPT_SET_FORMAT, "vocab_size": vocab_size, "count": len(rows)}
            fh.write(json.dumps(header) + "\n")
            for ids in rows:
                fh.write(json.dumps({"input_ids": ids}, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, target)  # fails if it exists: unlike rename, never replaces a winner's file
        except FileExistsError:
            return read_prompt_set(target, vocab_size), False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            # No hard links on this volume (some CSI/FUSE drivers): rename, checking for a winner first;
            # the window between the check and the rename is what such a volume leaves us.
            if target.exists():
                return read_prompt_set(target, vocab_size), False
            os.replace(tmp, target)
        _fsync_dir(target.parent)
        return rows, True
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(target, exc) from exc
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _fsync_dir(directory: Path) -> None:
    """Make the new directory entry durable (best effort: not every filesystem allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def resolve_prompts(
    prompt_set: str | None,
    vocab_size: int,
    build: Callable[[], list[list[int]]],
    max_samples: int | None,
) -> tuple[list[list[int]], bool]:
    """The evaluation prompts and whether a prompt set was created: the set's first `max_samples` when
    the file exists, else `build()` (from --data), saved as the set when one is named."""
    if prompt_set and Path(prompt_set).exists():
        return read_prompt_set(prompt_set, vocab_size)[:max_samples], False
    prompts = build()
    if not prompt_set:
        return prompts, False
    held, created = write_prompt_set(prompt_set, prompts, vocab_size)
    return held[:max_samples], created
