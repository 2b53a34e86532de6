"""Training data: a packing plan per epoch and batch assembly from stored or live hidden states.

Plan: the samples of an epoch are shuffled with a generator seeded by (seed, epoch), then packed in
that order into rows of at most `total_seq_len` (shifted) tokens; consecutive groups of `rows_per_step`
rows form the global batch of one optimizer step, and rank r of W takes rows r, r+W, ... of it. The
plan depends only on (seed, epoch, lengths, total_seq_len, rows_per_step), never on the world size, so
one process with the same global batch sees exactly the same rows, and a resumed run continues at the
same row.

Sources turn a row's sample ids into micro-batches (`layout`: the documents as length-grouped padded rows,
or one packed row):
    OfflineSource  reads the datagen shards (HiddenStatesReader)
    OnlineSource   runs the verifier on the row's samples now (same capture code as datagen), so no
                   hidden state touches the disk; features are rounded to the same storage dtype as
                   offline shards, so both modes train on the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from speculators_core.data.features import VerifierFeatures, length_batches
from speculators_core.data.store import TokenStore
from speculators_core.train.ttt import Batch


def pack_rows(lengths: np.ndarray, order: Sequence[int], total_seq_len: int) -> list[list[int]]:
    """Greedy packing in `order`; `lengths` are shifted lengths (tokens - 1), clipped to the row size."""
    rows: list[list[int]] = []
    current: list[int] = []
    used = 0
    for sid in order:
        n = min(int(lengths[sid]), total_seq_len)
        if current and used + n > total_seq_len:
            rows.append(current)
            current, used = [], 0
        current.append(int(sid))
        used += n
    if current:
        rows.append(current)
    return rows


def epoch_plan(
    lengths: np.ndarray,
    sample_ids: Sequence[int],
    *,
    seed: int,
    epoch: int,
    total_seq_len: int,
    rows_per_step: int,
    shuffle: bool = True,
) -> list[list[list[int]]]:
    """Steps of the epoch: each `rows_per_step` rows (lists of sample ids); the remainder is dropped."""
    ids = np.asarray(sample_ids, dtype=np.int64)
    if shuffle:
        ids = ids[np.random.default_rng([seed, epoch]).permutation(len(ids))]
    rows = pack_rows(lengths, ids.tolist(), total_seq_len)
    steps = len(rows) // rows_per_step
    return [rows[i * rows_per_step : (i + 1) * rows_per_step] for i in range(steps)]


def usable_ids(lengths: np.ndarray) -> list[int]:
    """Samples with at least one (input, target) pair after the shift."""
    return [int(i) for i in np.flatnonzero(lengths >= 1)]


def _shift(p: dict[str, torch.Tensor], total_seq_len: int, feature: str = "aux") -> dict[str, torch.Tensor]:
    """Row t pairs token x_{t+1} with the verifier's state at t (`feature`: "aux" for EAGLE-3, "last" for
    EAGLE-1/HASS, whose trainer applies the verifier's final norm) and the target state y_{t+1}."""
    n = min(p["input_ids"].shape[0] - 1, total_seq_len)
    return {
        "input_ids": p["input_ids"][1 : n + 1],
        "hidden": p[feature][:n],
        "last": p["last"][1 : n + 1],
        "loss_mask": p["loss_mask"][1 : n + 1].bool(),
    }


def packed_batch(parts: Sequence[dict[str, torch.Tensor]]) -> Batch:
    """All documents in one row [1, T] with document ids (attention stays in-document through the mask)."""
    docs = [torch.full((p["input_ids"].shape[0],), d, dtype=torch.long) for d, p in enumerate(parts)]
    return Batch(
        input_ids=torch.cat([p["input_ids"] for p in parts])[None],
        hidden=torch.cat([p["hidden"] for p in parts])[None],
        last=torch.cat([p["last"] for p in parts])[None],
        loss_mask=torch.cat([p["loss_mask"] for p in parts])[None],
        document_ids=torch.cat(docs)[None],
    )


def padded_batch(parts: Sequence[dict[str, torch.Tensor]]) -> Batch:
    """One document per row, right-padded to the longest: [B, max length]."""
    width = max(p["input_ids"].shape[0] for p in parts)

    def pad(key: str, value: float | int | bool = 0) -> torch.Tensor:
        first = parts[0][key]
        out = torch.full((len(parts), width, *first.shape[1:]), value, dtype=first.dtype, device=first.device)
        for r, p in enumerate(parts):
            out[r, : p[key].shape[0]] = p[key]
        return out

    docs = torch.full((len(parts), width), -1, dtype=torch.long)
    for r, p in enumerate(parts):
        docs[r, : p["input_ids"].shape[0]] = 0
    return Batch(pad("input_ids"), pad("hidden"), pad("last"), pad("loss_mask", False), docs)


def length_groups(lengths: Sequence[int], budget: int, slack: float = 1.25) -> list[list[int]]:
    """Indices grouped by length (longest first) so that padding stays within `slack` of the real tokens
    and a group holds at most `budget` padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        padded = width * (len(current) + 1)
        if current and (padded > budget or padded > slack * (real + lengths[i])):
            groups.append(current)
            current, real = [], 0
        current.append(i)
        real += lengths[i]
    if current:
        groups.append(current)
    return groups


def layout(parts: Sequence[dict[str, torch.Tensor]], mode: str, total_seq_len: int) -> list[Batch]:
    """A packed row as micro-batches. "packed": one [1, T] row (attention over T x T with a document
    mask). "grouped": the row's documents as padded rows grouped by length, so attention costs
    sum(n_i^2) instead of T^2 (same loss, same gradients up to floating point)."""
    if mode == "packed":
        return [packed_batch(parts)]
    lengths = [p["input_ids"].shape[0] for p in parts]
    return [padded_batch([parts[i] for i in g]) for g in length_groups(lengths, total_seq_len)]


class OfflineSource:
    def __init__(
        self,
        reader: Any,
        total_seq_len: int,
        dtype: torch.dtype = torch.bfloat16,
        mode: str = "grouped",
        feature: str = "aux",
    ) -> None:
        self.reader = reader
        self.total_seq_len = total_seq_len
        self.dtype = dtype
        self.mode = mode
        self.feature = feature

    def batches(self, sample_ids: Sequence[int]) -> list[Batch]:
        parts = [
            _shift(self.reader.get(int(s), self.dtype), self.total_seq_len, self.feature) for s in sample_ids
        ]
        return layout(parts, self.mode, self.total_seq_len)


class OnlineSource:
    def __init__(
        self,
        features: VerifierFeatures,
        store: TokenStore,
        total_seq_len: int,
        *,
        storage_dtype: torch.dtype = torch.bfloat16,
        dtype: torch.dtype = torch.bfloat16,
        batch_tokens: int = 16384,
        pad_id: int = 0,
        mode: str = "grouped",
        feature: str = "aux",
    ) -> None:
        self.features = features
        self.feature = feature
        self.store = store
        self.total_seq_len = total_seq_len
        self.storage_dtype = storage_dtype
        self.dtype = dtype
        self.batch_tokens = batch_tokens
        self.pad_id = pad_id
        self.mode = mode

    def batches(self, sample_ids: Sequence[int]) -> list[Batch]:
        parts: list[dict[str, torch.Tensor]] = []
        for s in sample_ids:
            ids, mask = self.store[int(s)]
            ids, mask = ids[: self.total_seq_len + 1], mask[: self.total_seq_len + 1]
            parts.append({"input_ids": torch.from_numpy(ids), "loss_mask": torch.from_numpy(mask)})
        for group in length_batches([p["input_ids"].shape[0] for p in parts], self.batch_tokens):
            outs = self.features([parts[i]["input_ids"] for i in group], pad_id=self.pad_id)
            for i, (aux, last) in zip(group, outs, strict=True):
                # Round through the storage dtype, as datagen does, then to the training dtype.
                parts[i]["aux"] = aux.to(self.storage_dtype).to(self.dtype)
                parts[i]["last"] = last.to(self.storage_dtype).to(self.dtype)
        shifted = [_shift(p, self.total_seq_len, self.feature) for p in parts]
        return layout(shifted, self.mode, self.total_seq_len)
