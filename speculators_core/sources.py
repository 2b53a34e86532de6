"""Model and data sources: `hf://org/name`, `s3://bucket/prefix`, `pvc://claim/path`, or a local path.

Parsing is pure and torch-free: the operator uses it to decide mounts and init containers, the CLI to
decide how to fetch. Fetching lives in `speculators_core.fetch` (it imports huggingface_hub/boto3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, urlsplit

Scheme = Literal["hf", "s3", "pvc", "file"]

# Hugging Face repo ids: "name" or "org/name"; letters, digits, - _ . (no "--" or ".." runs).
_HF_REPO = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# DNS-1123 subdomain: the rule for PersistentVolumeClaim names.
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

SOURCE_URI_HELP = "use hf://org/name, s3://bucket/prefix or pvc://claim/path"


class SourceError(ValueError):
    """A source URI that cannot be used; the message says why and what to write instead."""


@dataclass(frozen=True)
class Source:
    scheme: Scheme
    uri: str
    repo_id: str | None = None  # hf
    bucket: str | None = None  # s3
    claim: str | None = None  # pvc
    path: str = ""  # s3 key prefix, pvc sub-path, or local path
    query: tuple[tuple[str, str], ...] = ()  # e.g. (("split", "train"),) for datasets

    @property
    def options(self) -> dict[str, str]:
        return dict(self.query)


def parse_source(uri: str, *, allow_local: bool = False) -> Source:
    """Parse a source URI; raise SourceError naming the problem and the accepted forms."""
    if not isinstance(uri, str) or not uri.strip():
        raise SourceError(f"empty source URI: {SOURCE_URI_HELP}")
    uri = uri.strip()
    if "://" not in uri:
        if allow_local:
            return Source(scheme="file", uri=uri, path=uri)
        raise SourceError(f"{uri!r} has no scheme: {SOURCE_URI_HELP}")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    query = tuple((k, v[-1]) for k, v in sorted(parse_qs(parts.query).items()))
    if scheme == "hf":
        repo_id = (parts.netloc + parts.path).strip("/")
        if not _HF_REPO.match(repo_id) or "--" in repo_id or ".." in repo_id:
            raise SourceError(f"{uri!r}: {repo_id!r} is not a Hugging Face repo id; write hf://org/name")
        return Source(scheme="hf", uri=uri, repo_id=repo_id, query=query)
    if scheme == "s3":
        if not _S3_BUCKET.match(parts.netloc):
            raise SourceError(f"{uri!r}: {parts.netloc!r} is not an S3 bucket name; write s3://bucket/prefix")
        return Source(scheme="s3", uri=uri, bucket=parts.netloc, path=parts.path.lstrip("/"), query=query)
    if scheme == "pvc":
        claim = parts.netloc
        if not claim or len(claim) > 253 or not _DNS1123.match(claim):
            raise SourceError(
                f"{uri!r}: {claim!r} is not a PersistentVolumeClaim name (lowercase DNS-1123); write pvc://claim/path"
            )
        path = parts.path.strip("/")
        if any(seg == ".." for seg in path.split("/")):
            raise SourceError(f"{uri!r}: the path may not contain '..'")
        return Source(scheme="pvc", uri=uri, claim=claim, path=path, query=query)
    if scheme == "file" and allow_local:
        return Source(scheme="file", uri=uri, path=parts.path)
    raise SourceError(f"{uri!r}: unsupported scheme {scheme!r}; {SOURCE_URI_HELP}")
