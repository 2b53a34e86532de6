"""Hidden-state shards on disk: chunk files, per-shard manifests, and the reader training uses.

Layout under the hidden-states directory (one sub-directory per datagen worker):
    shard-00002-of-00004/
        train-000000.safetensors     a chunk: consecutive samples of the worker's range
        heldout-000000.safetensors
        manifest.json                written last: the shard is complete
A chunk holds the samples concatenated along tokens:
    input_ids [N] int32, loss_mask [N] uint8, offsets [n+1] int64, sample_ids [n] int64,
    aux_hidden_states [N, n_aux*H], last_hidden_states [N, H]   (bfloat16 | float32 | float8_e4m3fn)
    aux_scale [N, n_aux] float32, last_scale [N, 1] float32     (float8 only: per-token, per-layer scales)
and the run's identity in its safetensors metadata, so a chunk made with other settings is never reused.
Every file is written to a temporary name and renamed; a restarted worker deletes temporaries, keeps
complete chunks that match, and regenerates the rest.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from speculators_core.data.errors import CorruptShardError, IncompatibleDataError
from speculators_core.data.fsutil import NO_SPACE_ERRNOS, disk_full, is_disk_full, write_json_atomic

FORMAT = "speculators-core/hidden-states/v1"
MANIFEST = "manifest.json"
SPLITS = ("train", "heldout")
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float8": torch.float8_e4m3fn}
FP8_MAX = 448.0
_SHARD_RE = re.compile(r"^shard-(\d{5})-of-(\d{5})$")


@dataclass(frozen=True)
class RunIdentity:
    """What the shards were made from; shards of another identity are stale."""

    verifier: str
    layer_ids: tuple[int, ...]
    num_layers: int
    hidden_size: int
    dtype: str
    data_fingerprint: str
    num_shards: int

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["layer_ids"] = list(self.layer_ids)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunIdentity:
        return cls(**{**d, "layer_ids": tuple(d["layer_ids"])})

    def key(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


def shard_dir(root: str | os.PathLike[str], index: int, num_shards: int) -> Path:
    return Path(root) / f"shard-{index:05d}-of-{num_shards:05d}"


def shard_range(num_samples: int, index: int, num_shards: int) -> tuple[int, int]:
    return num_samples * index // num_shards, num_samples * (index + 1) // num_shards


def plan_chunks(lengths: np.ndarray, start: int, end: int, chunk_tokens: int) -> list[tuple[int, int]]:
    """Consecutive sample ranges of about `chunk_tokens` tokens; deterministic: a restart finds the same."""
    chunks: list[tuple[int, int]] = []
    a, tokens = start, 0
    for i in range(start, end):
        tokens += int(lengths[i])
        if tokens >= chunk_tokens:
            chunks.append((a, i + 1))
            a, tokens = i + 1, 0
    if a < end:
        chunks.append((a, end))
    return chunks


def chunk_name(split: str, k: int) -> str:
    return f"{split}-{k:06d}.safetensors"


def quantize_fp8(x: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, groups*H] -> (fp8 [N, groups*H], scale [N, groups]); absmax scaling per token and layer."""
    n = x.shape[0]
    xg = x.float().view(n, groups, -1)
    scale = (xg.abs().amax(dim=-1) / FP8_MAX).clamp(min=1e-12)
    q = (xg / scale.unsqueeze(-1)).to(torch.float8_e4m3fn)
    return q.view(n, -1), scale


def dequantize_fp8(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    n, groups = scale.shape
    return (q.float().view(n, groups, -1) * scale.unsqueeze(-1)).view(n, -1).to(dtype)


def write_chunk(
    path: Path,
    *,
    sample_ids: Sequence[int],
    input_ids: Sequence[torch.Tensor],
    loss_masks: Sequence[torch.Tensor],
    aux: Sequence[torch.Tensor],
    last: Sequence[torch.Tensor],
    identity: RunIdentity,
) -> int:
    """Write one chunk atomically; returns its size. Disk full -> DiskFullError (nothing left behind)."""
    lengths = [int(t.shape[0]) for t in input_ids]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    aux_all = torch.cat([a.detach().cpu() for a in aux])
    last_all = torch.cat([x.detach().cpu() for x in last])
    tensors: dict[str, torch.Tensor] = {
        "input_ids": torch.cat([t.to(torch.int32) for t in input_ids]),
        "loss_mask": torch.cat([m.to(torch.uint8) for m in loss_masks]),
        "offsets": torch.from_numpy(offsets),
        "sample_ids": torch.tensor(list(sample_ids), dtype=torch.int64),
    }
    if identity.dtype == "float8":
        tensors["aux_hidden_states"], tensors["aux_scale"] = quantize_fp8(aux_all, len(identity.layer_ids))
        tensors["last_hidden_states"], tensors["last_scale"] = quantize_fp8(last_all, 1)
    else:
        store = DTYPES[identity.dtype]
        tensors["aux_hidden_states"] = aux_all.to(store)
        tensors["last_hidden_states"] = last_all.to(store)
    metadata = {"format": FORMAT, "identity": identity.key()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o644)  # readable by the training pods
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full(path, exc) from exc  # type: ignore[arg-type]
        errno_ = _safetensors_errno(exc)
        if errno_ is not None:  # safetensors reports I/O errors as SafetensorError("... (os error N)")
            raise disk_full(path, OSError(errno_, os.strerror(errno_))) from exc
        raise
    return path.stat().st_size


def _safetensors_errno(exc: BaseException) -> int | None:
    """The errno of a no-space I/O failure inside safetensors' writer, if that is what `exc` is."""
    if not isinstance(exc, SafetensorError):
        return None
    match = re.search(r"os error (\d+)", str(exc))
    if match and int(match.group(1)) in NO_SPACE_ERRNOS:
        return int(match.group(1))
    return None


def chunk_is_valid(path: Path, identity: RunIdentity, start: int, end: int) -> bool:
    """A finished chunk of this run covering exactly samples [start, end)? (header checks only: cheap)."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("identity") != identity.key():
                return False
            ids = f.get_tensor("sample_ids")
            return len(ids) == end - start and int(ids[0]) == start and int(ids[-1]) == end - 1
    except (SafetensorError, OSError, RuntimeError, KeyError, IndexError):
        return False


def write_manifest(directory: Path, identity: RunIdentity, index: int, content: dict[str, Any]) -> None:
    write_json_atomic(
        directory / MANIFEST,
        {"format": FORMAT, "identity": identity.to_json(), "shard_index": index, **content},
    )


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if data.get("format") == FORMAT else None


@dataclass(frozen=True)
class _Entry:
    file: Path
    row: int


class HiddenStatesReader:
    """Samples of one split from a complete set of shards: `reader.get(sample_id)`.

    Checks on open: every shard of the set has its manifest; files exist with the recorded sizes; the
    identity matches `expect` (verifier, layer ids, hidden size, data fingerprint) when given.
    """

    def __init__(
        self, root: str | os.PathLike[str], split: str = "train", *, expect: dict[str, Any] | None = None
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"--hidden-states {self.root}: no such directory; run `speculators datagen`"
            )
        manifests = self._complete_set()
        self.identity = RunIdentity.from_json(manifests[0]["identity"])
        self._check_expected(expect or {})
        self.split = split
        self._index: dict[int, _Entry] = {}
        self._handles: dict[Path, Any] = {}
        self.num_tokens = 0
        for m in manifests:
            directory = shard_dir(self.root, m["shard_index"], self.identity.num_shards)
            for c in m["chunks"].get(split, []):
                path = directory / c["file"]
                if not path.exists() or path.stat().st_size != c["bytes"]:
                    raise CorruptShardError(
                        f"{path}: missing or truncated ({c['bytes']} bytes expected); "
                        f"delete {directory / MANIFEST} "
                        f"and re-run datagen --shard-index {m['shard_index']} (finished chunks are kept)"
                    )
                for row, sid in enumerate(range(c["start"], c["end"])):
                    self._index[sid] = _Entry(path, row)
                self.num_tokens += c["tokens"]
        self.sample_ids = sorted(self._index)

    def _complete_set(self) -> list[dict[str, Any]]:
        by_total: dict[int, dict[int, dict[str, Any]]] = {}
        for d in sorted(self.root.iterdir()):
            match = _SHARD_RE.match(d.name)
            if not match or not d.is_dir():
                continue
            manifest = read_manifest(d)
            if manifest is not None:
                by_total.setdefault(int(match.group(2)), {})[int(match.group(1))] = manifest
        for total, found in sorted(by_total.items()):
            if len(found) == total:
                idents = [json.dumps(found[i]["identity"], sort_keys=True) for i in range(total)]
                stale = [i for i in range(total) if idents[i] != idents[0]]
                if stale:
                    raise IncompatibleDataError(
                        f"{self.root}: shards {stale} were made from other data or settings than shard 0; "
                        f"re-run datagen --num-shards {total} --shard-index I for the stale ones"
                    )
                return [found[i] for i in range(total)]
        if not by_total:
            raise FileNotFoundError(f"{self.root}: no finished hidden-state shard; run `speculators datagen`")
        total, found = max(by_total.items(), key=lambda kv: len(kv[1]))
        missing = sorted(set(range(total)) - set(found))
        raise IncompatibleDataError(
            f"{self.root}: datagen did not finish: shards {missing} of {total} have no manifest; "
            f"run datagen --num-shards {total} --shard-index I for each of them"
        )

    def _check_expected(self, expect: dict[str, Any]) -> None:
        have = self.identity.to_json()
        diffs = [
            f"{k}: shards have {have[k]!r}, expected {v!r}"
            for k, v in expect.items()
            if v is not None and have[k] != v
        ]
        if diffs:
            raise IncompatibleDataError(
                f"{self.root}: hidden states do not match this training ({'; '.join(diffs)}); re-run datagen"
            )

    def __len__(self) -> int:
        return len(self._index)

    def _open(self, path: Path) -> Any:
        h = self._handles.get(path)
        if h is None:
            try:
                h = safe_open(str(path), "pt")
                if (h.metadata() or {}).get("identity") != self.identity.key():
                    raise CorruptShardError(
                        f"{path}: made by another datagen run (identity differs); re-run datagen"
                    )
            except SafetensorError as exc:
                raise CorruptShardError(
                    f"{path}: corrupt hidden-state chunk ({exc}); delete it and its shard's {MANIFEST}, "
                    "then re-run "
                    "datagen for that shard (the other chunks are kept)"
                ) from None
            self._handles[path] = h
        return h

    def get(self, sample_id: int, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
        entry = self._index.get(sample_id)
        if entry is None:
            raise KeyError(f"sample {sample_id} is not in the {self.split} hidden states of {self.root}")
        f = self._open(entry.file)
        try:
            offsets = f.get_slice("offsets")[entry.row : entry.row + 2]
            a, b = int(offsets[0]), int(offsets[1])
            out = {
                "input_ids": f.get_slice("input_ids")[a:b].long(),
                "loss_mask": f.get_slice("loss_mask")[a:b].bool(),
            }
            aux = f.get_slice("aux_hidden_states")[a:b]
            last = f.get_slice("last_hidden_states")[a:b]
            if self.identity.dtype == "float8":
                aux = dequantize_fp8(aux, f.get_slice("aux_scale")[a:b], dtype)
                last = dequantize_fp8(last, f.get_slice("last_scale")[a:b], dtype)
            out["aux"] = aux.to(dtype)
            out["last"] = last.to(dtype)
        except (SafetensorError, RuntimeError, ValueError) as exc:
            raise CorruptShardError(
                f"{entry.file}: cannot read sample {sample_id} ({exc}); re-run datagen"
            ) from None
        return out

    def iter_ids(self) -> Iterator[int]:
        return iter(self.sample_ids)
