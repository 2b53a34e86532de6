"""Read safetensors headers without torch: tensor names, dtypes, shapes (for `inspect` and the operator).

A safetensors file starts with an 8-byte little-endian header length and a JSON header
`{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}`, followed by the data.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from speculators_core.format.errors import CheckpointError

_MAX_HEADER = 100 * 1024 * 1024
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4"})
INDEX_NAME = "model.safetensors.index.json"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def read_header(path: str | os.PathLike[str]) -> dict[str, TensorInfo]:
    """Tensor infos of one .safetensors file; CheckpointError naming the file if truncated or corrupt."""
    p = Path(path)
    fix = "re-download or re-export the file"
    try:
        size = p.stat().st_size
        with p.open("rb") as fh:
            raw_len = fh.read(8)
            if len(raw_len) < 8:
                raise CheckpointError(
                    f"{p}: truncated safetensors file (shorter than its 8-byte header); {fix}"
                )
            (n,) = struct.unpack("<Q", raw_len)
            if n > _MAX_HEADER or 8 + n > size:
                raise CheckpointError(f"{p}: corrupt or truncated safetensors header (length {n}); {fix}")
            header = json.loads(fh.read(n))
    except OSError as exc:
        raise CheckpointError(f"{p}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{p}: corrupt safetensors header (not JSON); {fix}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{p}: corrupt safetensors header; {fix}")
    infos: dict[str, TensorInfo] = {}
    end = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            shape = tuple(int(d) for d in meta["shape"])
            start, stop = (int(x) for x in meta["data_offsets"])
            infos[name] = TensorInfo(name=name, dtype=str(meta["dtype"]), shape=shape, file=p.name)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{p}: corrupt entry for tensor {name!r} in the header; {fix}") from None
        end = max(end, stop)
        if start > stop:
            raise CheckpointError(f"{p}: corrupt offsets for tensor {name!r}; {fix}")
    if 8 + n + end > size:
        raise CheckpointError(
            f"{p}: truncated: the header describes {8 + n + end} bytes but the file has {size}; {fix}"
        )
    return infos


def checkpoint_tensors(directory: str | os.PathLike[str]) -> dict[str, TensorInfo]:
    """Tensor infos of every safetensors file of a checkpoint directory (single file or sharded index)."""
    d = Path(directory)
    index = d / INDEX_NAME
    files: list[Path]
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise CheckpointError(
                f"{index}: not a valid safetensors index (needs a weight_map object)"
            ) from None
        files = [d / f for f in sorted(set(weight_map.values()))]
    else:
        files = sorted(d.glob("*.safetensors"))
    if not files:
        raise CheckpointError(
            f"{d}: no .safetensors weights found; a speculators checkpoint holds model.safetensors"
        )
    infos: dict[str, TensorInfo] = {}
    for f in files:
        if not f.exists():
            raise CheckpointError(f"{f}: listed in {INDEX_NAME} but missing; re-download the checkpoint")
        infos.update(read_header(f))
    return infos
