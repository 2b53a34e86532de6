"""Download sources (what init containers run) and upload artifacts (the publish step).

    hf://org/name    huggingface_hub snapshot_download (revision; HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE)
    s3://bucket/pfx  boto3 (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_DEFAULT_REGION)
    pvc://claim/p    mounted read-only at /mnt/pvc/<claim>/<p>: checked, not copied
    local path       checked, not copied

Files land under a temporary name and are renamed; a re-run skips files already complete (same size),
so a retried init container resumes. Failures are classified for the Job: a missing repo, bucket,
key or permission is permanent (FetchError); network, throttling and 5xx are transient (ConnectionError).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speculators_core.data.errors import InputError
from speculators_core.data.fsutil import disk_full, is_disk_full, write_json_atomic
from speculators_core.data.loading import PVC_MOUNT_ROOT
from speculators_core.sources import Source, parse_source

MARKER = ".speculators-fetch.json"


class FetchError(InputError):
    """A source that does not exist or cannot be read with the given credentials (permanent)."""


@dataclass(frozen=True)
class FetchResult:
    path: Path
    files: int
    bytes: int


def _tree_size(path: Path) -> tuple[int, int]:
    if path.is_file():
        return 1, path.stat().st_size
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def fetch(source: str, dest: str | os.PathLike[str] | None, *, revision: str | None = None) -> FetchResult:
    src = parse_source(source, allow_local=True)
    if src.scheme in ("pvc", "file"):
        path = Path(PVC_MOUNT_ROOT) / str(src.claim) / src.path if src.scheme == "pvc" else Path(src.path)
        if not path.exists():
            hint = (
                f" (is the claim {src.claim!r} mounted at {PVC_MOUNT_ROOT}/{src.claim}?)"
                if src.scheme == "pvc"
                else ""
            )
            raise FetchError(f"{source}: {path} does not exist{hint}")
        return FetchResult(path, *_tree_size(path))
    if dest is None:
        raise InputError(f"{source}: --dest is required for {src.scheme}:// sources")
    target = Path(dest)
    target.mkdir(parents=True, exist_ok=True)
    if src.scheme == "hf":
        _fetch_hf(src, target, revision)
    else:
        _fetch_s3(src, target)
    result = FetchResult(target, *_tree_size(target))
    write_json_atomic(
        target / MARKER,
        {"source": source, "revision": revision, "files": result.files, "bytes": result.bytes},
    )
    return result


# ----------------------------------------------------------------------------------------------- hf
def _hf_error(source: str, exc: Exception) -> Exception:
    from huggingface_hub import errors as hf

    if isinstance(exc, hf.RepositoryNotFoundError | hf.GatedRepoError):
        return FetchError(
            f"{source}: repository not found or not accessible; check the id and the HF_TOKEN secret"
        )
    if isinstance(exc, hf.RevisionNotFoundError):
        return FetchError(f"{source}: revision not found; check spec.verifier.revision")
    if isinstance(exc, hf.LocalEntryNotFoundError) and os.environ.get("HF_HUB_OFFLINE"):
        return FetchError(f"{source}: HF_HUB_OFFLINE is set and the files are not in the local cache")
    return ConnectionError(f"{source}: download failed ({type(exc).__name__}: {exc}); retrying may help")


def _fetch_hf(src: Source, target: Path, revision: str | None) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    token = os.environ.get("HF_TOKEN") or None
    try:
        try:
            snapshot_download(repo_id=str(src.repo_id), revision=revision, local_dir=str(target), token=token)
        except LocalEntryNotFoundError:
            if not os.environ.get("HF_HUB_OFFLINE"):
                raise
            # Offline, a local_dir download only looks at local_dir itself: copy from the hub cache (HF_HOME).
            cached = snapshot_download(repo_id=str(src.repo_id), revision=revision, token=token)
            shutil.copytree(cached, target, dirs_exist_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(target, exc) from exc
        raise _hf_error(src.uri, exc) from exc
    except Exception as exc:
        raise _hf_error(src.uri, exc) from exc


# ----------------------------------------------------------------------------------------------- s3
def s3_client() -> Any:
    import boto3
    from botocore.config import Config

    # boto3 reads AWS_ENDPOINT_URL / AWS_DEFAULT_REGION / credentials from the environment itself.
    return boto3.client("s3", config=Config(retries={"max_attempts": 8, "mode": "adaptive"}))


def _s3_error(uri: str, exc: Exception) -> Exception:
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return FetchError(
            f"{uri}: no AWS credentials; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (secretRef)"
        )
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in (
            "NoSuchBucket",
            "NoSuchKey",
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "404",
            "403",
        ):
            return FetchError(f"{uri}: {code}; check the bucket/prefix and the credentials")
        if status and status < 500 and code not in ("SlowDown", "Throttling", "RequestTimeout"):
            return FetchError(f"{uri}: {code} (HTTP {status})")
    return ConnectionError(f"{uri}: S3 request failed ({type(exc).__name__}: {exc}); retrying may help")


def _fetch_s3(src: Source, target: Path) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client()
    prefix = src.path.rstrip("/")
    try:
        keys: list[tuple[str, int]] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=src.bucket, Prefix=prefix):
            keys += [(o["Key"], int(o["Size"])) for o in page.get("Contents", [])]
        if not keys:
            raise FetchError(f"{src.uri}: no objects under this prefix")
        for key, size in keys:
            rel = key[len(prefix) :].lstrip("/") if prefix and key != prefix else Path(key).name
            if not rel or rel.endswith("/"):
                continue
            out = target / rel
            if ".." in Path(rel).parts:
                raise FetchError(f"{src.uri}: object key {key!r} escapes the destination")
            if out.exists() and out.stat().st_size == size:
                continue  # complete from an earlier attempt
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
            try:
                client.download_file(src.bucket, key, str(tmp))
                os.replace(tmp, out)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                if is_disk_full(exc):
                    raise disk_full(out, exc) from exc
                raise
    except (ClientError, BotoCoreError) as exc:
        raise _s3_error(src.uri, exc) from exc


# ----------------------------------------------------------------------------------------------- publish
def publish(directory: str | os.PathLike[str], to: str, *, private: bool = False) -> str:
    """Upload a directory to s3:// or hf://; returns the artifact URI."""
    path = Path(directory)
    if not (path / "config.json").exists():
        raise InputError(f"{path}: no config.json; publish a trained speculators directory (train --output)")
    dest = parse_source(to)
    if dest.scheme == "s3":
        return _publish_s3(path, dest)
    if dest.scheme == "hf":
        return _publish_hf(path, dest, private)
    raise InputError(f"--to {to}: publish supports s3://bucket/prefix and hf://org/repo")


def _publish_s3(path: Path, dest: Source) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client()
    prefix = dest.path.rstrip("/")
    try:
        for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            key = "/".join(x for x in (prefix, f.relative_to(path).as_posix()) if x)
            client.upload_file(str(f), dest.bucket, key)
    except (ClientError, BotoCoreError) as exc:
        raise _s3_error(dest.uri, exc) from exc
    return f"s3://{dest.bucket}/{prefix}" if prefix else f"s3://{dest.bucket}"


def _publish_hf(path: Path, dest: Source, private: bool) -> str:
    from huggingface_hub import HfApi

    api = HfApi(token=os.environ.get("HF_TOKEN") or None)
    try:
        api.create_repo(str(dest.repo_id), private=private, exist_ok=True)
        api.upload_folder(folder_path=str(path), repo_id=str(dest.repo_id), ignore_patterns=[".*"])
    except Exception as exc:
        raise _hf_error(dest.uri, exc) from exc
    return f"hf://{dest.repo_id}"
