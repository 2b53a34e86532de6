"""Resolve a model reference (local directory or Hugging Face hub id) to local files.

Hub downloads go through huggingface_hub (honouring HF_TOKEN, HF_HOME, HF_HUB_OFFLINE). Network and
rate-limit failures become SourceUnavailableError (retried by the Job); a missing repo or file becomes
CheckpointError (permanent).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from speculators_core.format.errors import CheckpointError, SourceUnavailableError
from speculators_core.serving import is_valid_repo_id


def _hub_error(ref: str, exc: Exception) -> Exception:
    from huggingface_hub import errors as hf_errors

    name = type(exc).__name__
    if isinstance(exc, hf_errors.RepositoryNotFoundError | hf_errors.GatedRepoError):
        return CheckpointError(
            f"{ref}: hub repository not found or not accessible ({name}); check the id and HF_TOKEN"
        )
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return CheckpointError(f"{ref}: revision not found on the hub; check --revision")
    if isinstance(exc, hf_errors.EntryNotFoundError):
        return CheckpointError(f"{ref}: file not found in the hub repository ({exc})")
    return SourceUnavailableError(
        f"{ref}: could not download from the Hugging Face hub ({name}: {exc}); "
        "check the network, HF_HUB_OFFLINE and HF_TOKEN, then retry"
    )


def _check_ref(ref: str) -> None:
    if not is_valid_repo_id(ref):
        raise CheckpointError(
            f"{ref}: no such local directory, and not a Hugging Face hub id (org/name); check the path"
        )


def snapshot(
    ref: str | os.PathLike[str], *, allow_patterns: Sequence[str], revision: str | None = None
) -> Path:
    """A local directory for `ref`: the directory itself, or a hub snapshot limited to `allow_patterns`."""
    p = Path(ref)
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"{p}: expected a directory")
        return p
    ref = str(ref)
    _check_ref(ref)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=ref, revision=revision, allow_patterns=list(allow_patterns)))
    except Exception as exc:
        raise _hub_error(ref, exc) from None


def fetch_file(ref: str | os.PathLike[str], filename: str, *, revision: str | None = None) -> Path | None:
    """`ref/filename` locally (None if a local directory lacks it); hub files are downloaded one by one."""
    p = Path(ref)
    if p.exists():
        candidate = p / filename
        return candidate if candidate.exists() else None
    ref = str(ref)
    _check_ref(ref)
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=ref, filename=filename, revision=revision))
    except hf_errors.EntryNotFoundError:
        return None
    except Exception as exc:
        raise _hub_error(ref, exc) from None


def read_json(
    ref: str | os.PathLike[str], filename: str = "config.json", *, revision: str | None = None
) -> dict[str, Any]:
    """A JSON file of a local directory or hub repo; CheckpointError if absent or invalid."""
    path = fetch_file(ref, filename, revision=revision)
    if path is None:
        raise CheckpointError(f"{ref}: has no {filename}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data
