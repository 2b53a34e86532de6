"""Tokenized samples on disk: flat memory-mapped arrays, O(1) memory whatever the dataset size.

A split directory holds
    tokens.bin     int32  all samples' token ids, concatenated
    loss_mask.bin  uint8  1 where the token is part of an assistant turn (trained on)
    offsets.npy    int64  [n + 1] sample boundaries into the two arrays
Writers append sample by sample; a split becomes visible only when the whole prepared directory is
renamed into place (see prepare.py), so a reader never sees a half-written split.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

TOKENS = "tokens.bin"
MASK = "loss_mask.bin"
OFFSETS = "offsets.npy"


class TokenStoreWriter:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._tokens = open(self.dir / TOKENS, "wb")  # noqa: SIM115 - closed in close()
        self._mask = open(self.dir / MASK, "wb")  # noqa: SIM115
        self._offsets = [0]
        self._hash = hashlib.sha256()

    def append(self, input_ids: Sequence[int], loss_mask: Sequence[int]) -> None:
        if len(input_ids) != len(loss_mask):
            raise ValueError(
                f"input_ids ({len(input_ids)}) and loss_mask ({len(loss_mask)}) differ in length"
            )
        ids = np.asarray(input_ids, dtype=np.int32)
        mask = np.asarray(loss_mask, dtype=np.uint8)
        ids.tofile(self._tokens)
        mask.tofile(self._mask)
        self._hash.update(ids.tobytes())
        self._hash.update(mask.tobytes())
        self._offsets.append(self._offsets[-1] + len(ids))

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @property
    def num_tokens(self) -> int:
        return self._offsets[-1]

    def close(self) -> str:
        """Flush everything to disk; returns the content fingerprint (sha256 of tokens and masks)."""
        for fh in (self._tokens, self._mask):
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        np.save(self.dir / OFFSETS, np.asarray(self._offsets, dtype=np.int64))
        return self._hash.hexdigest()


class TokenStore:
    """Read side: `store[i]` -> (input_ids int64 array, loss_mask uint8 array)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        missing = [n for n in (TOKENS, MASK, OFFSETS) if not (self.dir / n).exists()]
        if missing:
            raise FileNotFoundError(
                f"{self.dir}: not a prepared data split (missing {', '.join(missing)}); "
                "run `speculators prepare-data`"
            )
        self.offsets = np.load(self.dir / OFFSETS)
        total = int(self.offsets[-1])
        self.tokens = _memmap(self.dir / TOKENS, np.int32, total)
        self.mask = _memmap(self.dir / MASK, np.uint8, total)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    def length(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.tokens[a:b].astype(np.int64), np.array(self.mask[a:b])

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(len(self)):
            yield self[i]


def _memmap(path: Path, dtype: type, count: int) -> np.ndarray:
    size = path.stat().st_size
    expected = count * np.dtype(dtype).itemsize
    if size != expected:
        raise ValueError(
            f"{path}: {size} bytes, offsets.npy implies {expected}; the split is corrupt, re-run prepare-data"
        )
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))
