"""Read chat datasets and normalise every row to a list of {role, content} messages.

Sources: a local `.json` (a list of rows, or {"data"|"train": [...]}) or `.jsonl` file, a `datasets`
`save_to_disk` directory, or a hub dataset `hf://org/name[?split=train&config=name]` (also a bare
`org/name`). `pvc://claim/path` reads the mounted claim at /mnt/pvc/<claim>/<path>.

Row shapes: ShareGPT (`conversations`: [{from, value}]), OpenAI (`messages`: [{role, content}]), and
single-turn (`prompt` + `response`|`completion`, `instruction` [+ `input`] + `output`). A row that cannot
be used is never dropped silently: `iter_rows` yields a skip reason for it, which prepare-data counts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speculators_core.sources import SourceError, parse_source

ROLE_ALIASES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "tool": "tool",
    "function": "tool",
    "ipython": "tool",
    "observation": "tool",
}

PVC_MOUNT_ROOT = "/mnt/pvc"


class DataSourceError(ValueError):
    """A data source that cannot be read at all (not a row problem); the message names it and the fix."""


@dataclass(frozen=True)
class Row:
    """One dataset row: normalised messages, or the reason it was skipped."""

    index: int
    source: str
    messages: list[dict[str, Any]] | None = None
    skip: str | None = None
    detail: str = ""


def resolve_local(src: str) -> Path | None:
    """The local path of a data source, or None when it is a hub dataset."""
    if "://" not in src:
        p = Path(src)
        return p if p.exists() else None
    parsed = parse_source(src, allow_local=True)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme == "pvc":
        return Path(PVC_MOUNT_ROOT) / str(parsed.claim) / parsed.path
    return None


def iter_rows(src: str, *, open_ended: bool = False) -> Iterator[Row]:
    """Every row of `src`, normalised or with a skip reason (`open_ended`: see normalize_row)."""
    for index, raw, problem in _iter_raw(src):
        if problem is not None:
            yield Row(index=index, source=src, skip=problem[0], detail=problem[1])
            continue
        messages, reason = normalize_row(raw, open_ended=open_ended)
        if reason is not None:
            yield Row(index=index, source=src, skip=reason[0], detail=reason[1])
        else:
            yield Row(index=index, source=src, messages=messages)


def _iter_raw(src: str) -> Iterator[tuple[int, Any, tuple[str, str] | None]]:
    try:
        local = resolve_local(src)
    except SourceError as exc:
        raise DataSourceError(f"--data {src!r}: {exc}") from None
    if local is None and "://" not in src and _looks_like_path(src):
        raise DataSourceError(f"--data {src}: no such file or directory")
    if local is None:
        if src.startswith("s3://"):
            raise DataSourceError(
                f"--data {src}: s3 datasets are fetched first (speculators fetch), then read locally"
            )
        try:
            yield from _iter_hub(src)
        except SourceError as exc:
            raise DataSourceError(f"--data {src!r}: {exc}") from None
        return
    if local.is_dir() and _is_jsonl_dir(local):
        # A directory of JSON-lines files (captured traffic: speculators capture-proxy), oldest first.
        offset = 0
        for path in sorted(local.glob("*.jsonl")):
            count = 0
            for index, raw, problem in _iter_jsonl(path):
                yield offset + index, raw, problem
                count += 1
            offset += count
    elif local.is_dir() and not any(local.iterdir()):
        raise DataSourceError(
            f"--data {src}: the directory is empty; for captured traffic no file is finished yet (the "
            "capture proxy finishes one every recordsPerFile records, and when the pod stops)"
        )
    elif local.is_dir():
        yield from _iter_saved_dataset(local, src)
    elif local.suffix == ".jsonl":
        yield from _iter_jsonl(local)
    elif local.suffix == ".json":
        yield from _iter_json(local)
    elif not local.exists():
        raise DataSourceError(f"--data {src}: no such file or directory")
    else:
        raise DataSourceError(
            f"--data {src}: unsupported file type {local.suffix!r}; use .json, .jsonl, a datasets "
            "save_to_disk directory or hf://org/name"
        )


def _is_jsonl_dir(path: Path) -> bool:
    """JSON-lines files and no datasets save_to_disk metadata."""
    saved = (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
    return not saved and any(path.glob("*.jsonl"))


def _looks_like_path(src: str) -> bool:
    """A missing local path, not a hub id (org/name)."""
    return src.startswith(("/", ".", "~")) or src.endswith((".json", ".jsonl")) or src.count("/") > 1


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any, tuple[str, str] | None]]:
    with path.open("rb") as fh:
        for index, line in enumerate(fh):
            if not line.strip():
                yield index, None, ("empty_row", f"{path}:{index + 1}: blank line")
                continue
            try:
                yield index, json.loads(line), None
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield index, None, ("malformed_json", f"{path}:{index + 1}: {exc}")


def _iter_json(path: Path) -> Iterator[tuple[int, Any, tuple[str, str] | None]]:
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataSourceError(
            f"--data {path}: not valid JSON ({exc}); use a list of rows or JSON lines"
        ) from None
    if isinstance(data, dict):
        for key in ("data", "train", "rows", "conversations"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list):
        raise DataSourceError(f"--data {path}: expected a JSON list of rows (or {{'data': [...]}})")
    for index, raw in enumerate(data):
        yield index, raw, None


def _iter_saved_dataset(path: Path, src: str) -> Iterator[tuple[int, Any, tuple[str, str] | None]]:
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as exc:
        raise DataSourceError(f"--data {src}: not a datasets save_to_disk directory ({exc})") from None
    if isinstance(ds, DatasetDict):
        split = parse_source(src, allow_local=True).options.get("split", "train") if "://" in src else "train"
        if split not in ds:
            raise DataSourceError(f"--data {src}: no split {split!r} (has {', '.join(ds)}); add ?split=NAME")
        ds = ds[split]
    for index, raw in enumerate(ds):
        yield index, raw, None


def _iter_hub(src: str) -> Iterator[tuple[int, Any, tuple[str, str] | None]]:
    from datasets import load_dataset

    parsed = parse_source(src if "://" in src else f"hf://{src}")
    opts = parsed.options
    try:
        ds = load_dataset(
            parsed.repo_id,
            name=opts.get("config"),
            split=opts.get("split", "train"),
            revision=opts.get("revision"),
            token=os.environ.get("HF_TOKEN"),
        )
    except (ConnectionError, TimeoutError, OSError) as exc:
        raise ConnectionError(f"--data {src}: could not download the dataset ({exc})") from exc
    except Exception as exc:
        raise DataSourceError(
            f"--data {src}: cannot load hub dataset ({type(exc).__name__}: {exc})"
        ) from None
    for index, raw in enumerate(ds):
        yield index, raw, None


def normalize_row(
    raw: Any, *, open_ended: bool = False
) -> tuple[list[dict[str, Any]] | None, tuple[str, str] | None]:
    """(messages, None) or (None, (reason, detail)).

    `open_ended` (responses are regenerated): a conversation that ends on a user turn — a captured
    request — keeps it and gets an empty assistant turn for the verifier to answer.
    """
    if not isinstance(raw, dict):
        return None, ("malformed_row", f"row is a {type(raw).__name__}, expected an object")
    turns: Any = None
    for key in ("conversations", "messages", "conversation"):
        if key in raw and raw[key] is not None:
            turns = raw[key]
            break
    if turns is None:
        single = _single_turn(raw)
        if single is None:
            return None, (
                "no_messages",
                f"row has none of conversations/messages/prompt+response (keys: {sorted(raw)})",
            )
        turns = single
    if isinstance(turns, str):
        try:
            turns = json.loads(turns)
        except json.JSONDecodeError:
            return None, ("malformed_row", "conversation is a string that is not JSON")
    if not isinstance(turns, list):
        return None, ("malformed_row", f"conversation is a {type(turns).__name__}, expected a list")
    if not turns:
        return None, ("empty_conversation", "conversation has no turns")
    messages: list[dict[str, Any]] = []
    for t in turns:
        if not isinstance(t, dict):
            return None, ("malformed_message", f"turn is a {type(t).__name__}, expected an object")
        role = t.get("role", t.get("from"))
        content = t.get("content", t.get("value"))
        if not isinstance(role, str):
            return None, ("malformed_message", "turn has no role/from")
        mapped = ROLE_ALIASES.get(role.strip().lower())
        if mapped is None:
            return None, ("unknown_role", f"role {role!r} (known: {', '.join(sorted(ROLE_ALIASES))})")
        if content is None:
            content = ""
        if not isinstance(content, str):
            return None, (
                "malformed_message",
                f"{mapped} content is a {type(content).__name__}, expected text",
            )
        msg: dict[str, Any] = {"role": mapped, "content": content}
        reasoning = t.get("reasoning_content", t.get("reasoning"))
        if mapped == "assistant" and isinstance(reasoning, str) and reasoning:
            msg["reasoning_content"] = reasoning
        messages.append(msg)
    if open_ended and messages and messages[-1]["role"] == "user":
        messages.append({"role": "assistant", "content": "", "open": True})
    # Trailing non-assistant turns train nothing.
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()
    if not messages:
        return None, ("no_assistant_turn", "conversation has no assistant turn")
    if any(
        m["role"] == "assistant"
        and not m["content"].strip()
        and not m.get("reasoning_content")
        and not m.get("open")
        for m in messages
    ):
        return None, ("empty_assistant_turn", "an assistant turn is empty")
    for m in messages:
        m.pop("open", None)  # the regeneration fills it; only the check above needed the mark
    if not any(m["role"] != "assistant" for m in messages):
        return None, ("no_prompt", "conversation has no user or system turn before the assistant")
    return messages, None


def _single_turn(raw: dict[str, Any]) -> list[dict[str, str]] | None:
    if isinstance(raw.get("prompt"), str):
        answer = raw.get("response", raw.get("completion", raw.get("output")))
        if isinstance(answer, str):
            return [{"role": "user", "content": raw["prompt"]}, {"role": "assistant", "content": answer}]
    if isinstance(raw.get("instruction"), str) and isinstance(raw.get("output"), str):
        prompt = raw["instruction"] + (
            f"\n\n{raw['input']}" if isinstance(raw.get("input"), str) and raw["input"] else ""
        )
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": raw["output"]}]
    return None
