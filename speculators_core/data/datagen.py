"""datagen: run the verifier over the prepared samples and store its hidden states in shards.

Worker `shard_index` of `num_shards` takes a contiguous slice of every split (one worker per pod of an
Indexed Job). Its slice is cut into chunks of about `chunk_tokens` tokens; each chunk is computed in
length-sorted, right-padded batches of at most `batch_tokens` tokens and written with write-then-rename.
A restarted worker keeps the chunks that are complete and made with the same settings; the shard's
manifest is written last and makes the shard visible to training.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speculators_core.data.errors import IncompatibleDataError, InputError
from speculators_core.data.features import (
    VerifierFeatures,
    check_layer_ids,
    default_layer_ids,
    length_batches,
    load_verifier,
)
from speculators_core.data.fsutil import remove_stale_temps
from speculators_core.data.hidden_states import (
    DTYPES,
    SPLITS,
    RunIdentity,
    chunk_is_valid,
    chunk_name,
    plan_chunks,
    read_manifest,
    shard_dir,
    shard_range,
    write_chunk,
    write_manifest,
)
from speculators_core.data.prepare import data_fingerprint, read_meta
from speculators_core.data.store import TokenStore


@dataclass
class DatagenConfig:
    verifier: str
    data: Path
    output: Path
    num_shards: int = 1
    shard_index: int = 0
    layer_ids: list[int] | None = None
    dtype: str = "bfloat16"
    batch_tokens: int = 16384
    chunk_tokens: int = 32768
    splits: tuple[str, ...] = SPLITS
    revision: str | None = None
    device: str | None = None

    def validate(self) -> None:
        if self.num_shards < 1:
            raise InputError(f"--num-shards must be >= 1, got {self.num_shards}")
        if not 0 <= self.shard_index < self.num_shards:
            raise InputError(f"--shard-index {self.shard_index} must be in [0, {self.num_shards})")
        if self.dtype not in DTYPES:
            raise InputError(f"--dtype {self.dtype!r}: allowed {', '.join(DTYPES)}")
        if self.batch_tokens < 1 or self.chunk_tokens < 1:
            raise InputError("--batch-tokens and --chunk-tokens must be positive")


def run_datagen(
    cfg: DatagenConfig,
    *,
    model: Any = None,
    on_progress: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Generate this worker's shard; returns the summary (samples/tokens/bytes written or reused)."""
    cfg.validate()
    meta = read_meta(cfg.data)
    stores = {s: TokenStore(cfg.data / s) for s in cfg.splits}
    identity = expected_identity(cfg, meta)
    directory = shard_dir(cfg.output, cfg.shard_index, cfg.num_shards)
    summary: dict[str, Any] = {
        "shard": cfg.shard_index,
        "num_shards": cfg.num_shards,
        "layer_ids": list(identity.layer_ids),
    }
    manifest = read_manifest(directory)
    if manifest is not None and manifest["identity"] == identity.to_json():
        return {**summary, **manifest["totals"], "reused": True}  # finished before: cheap re-run
    if model is None:
        model = load_verifier(cfg.verifier, revision=cfg.revision, device=cfg.device)
    features = VerifierFeatures(model, identity.layer_ids)
    if (features.num_layers, features.hidden_size) != (identity.num_layers, identity.hidden_size):
        raise IncompatibleDataError(
            f"{cfg.verifier}: the loaded model has {features.num_layers} layers of width "
            f"{features.hidden_size}, "
            f"its config.json says {identity.num_layers} x {identity.hidden_size}"
        )
    if manifest is not None:  # made with other settings: stale
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(directory)

    t0 = time.monotonic()
    totals = {"samples": 0, "tokens": 0, "bytes": 0, "chunks_reused": 0, "chunks_written": 0}
    chunks_out: dict[str, list[dict[str, Any]]] = {}
    pad = int(meta.get("pad_token_id") or 0)
    for split in cfg.splits:
        store = stores[split]
        lengths = store.lengths()
        lo, hi = shard_range(len(store), cfg.shard_index, cfg.num_shards)
        chunks_out[split] = []
        for k, (a, b) in enumerate(plan_chunks(lengths, lo, hi, cfg.chunk_tokens)):
            path = directory / chunk_name(split, k)
            tokens = int(lengths[a:b].sum())
            if path.exists() and chunk_is_valid(path, identity, a, b):
                totals["chunks_reused"] += 1
            else:
                _compute_chunk(path, store, a, b, features, identity, cfg.batch_tokens, pad)
                totals["chunks_written"] += 1
            size = path.stat().st_size
            chunks_out[split].append(
                {"file": path.name, "start": a, "end": b, "tokens": tokens, "bytes": size}
            )
            totals["samples"] += b - a
            totals["tokens"] += tokens
            totals["bytes"] += size
            if on_progress is not None:
                on_progress(b - a, {"split": split, "tokens": totals["tokens"]})
    # Remove chunks of an earlier plan (e.g. another --chunk-tokens) that the manifest will not list.
    listed = {c["file"] for cs in chunks_out.values() for c in cs}
    for p in directory.glob("*.safetensors"):
        if p.name not in listed:
            p.unlink()
    elapsed = time.monotonic() - t0
    totals["seconds"] = round(elapsed, 3)
    write_manifest(directory, identity, cfg.shard_index, {"chunks": chunks_out, "totals": totals})
    return {**summary, **totals, "reused": False}


def _compute_chunk(
    path: Path,
    store: TokenStore,
    a: int,
    b: int,
    features: VerifierFeatures,
    identity: RunIdentity,
    batch_tokens: int,
    pad: int,
) -> None:
    ids = [torch.from_numpy(store[i][0]) for i in range(a, b)]
    masks = [torch.from_numpy(store[i][1]) for i in range(a, b)]
    aux: list[torch.Tensor | None] = [None] * len(ids)
    last: list[torch.Tensor | None] = [None] * len(ids)
    # Cast on the device before the copy to host: halves the transfer for bf16 storage.
    store_dtype = torch.bfloat16 if identity.dtype == "bfloat16" else torch.float32
    for batch in length_batches([len(x) for x in ids], batch_tokens):
        outs = features([ids[i] for i in batch], pad_id=pad)
        for i, (x, y) in zip(batch, outs, strict=True):
            aux[i] = x.to(store_dtype).cpu()
            last[i] = y.to(store_dtype).cpu()
    write_chunk(
        path,
        sample_ids=range(a, b),
        input_ids=ids,
        loss_masks=masks,
        aux=[x for x in aux if x is not None],
        last=[x for x in last if x is not None],
        identity=identity,
    )


def expected_identity(cfg: DatagenConfig, meta: dict[str, Any]) -> RunIdentity:
    """The identity of this run's shards, from the verifier's config.json (no weights loaded)."""
    from speculators_core.models.verifier import read_verifier_config

    vc = read_verifier_config(cfg.verifier, revision=cfg.revision)
    num_layers, hidden = int(vc["num_hidden_layers"]), int(vc["hidden_size"])
    if int(vc["vocab_size"]) != int(meta["vocab_size"]):
        raise IncompatibleDataError(
            f"{cfg.data} was prepared for a vocabulary of {meta['vocab_size']} tokens, the verifier "
            f"{cfg.verifier} has {vc['vocab_size']}; re-run prepare-data with this verifier"
        )
    ids = check_layer_ids(cfg.layer_ids, num_layers) if cfg.layer_ids else default_layer_ids(num_layers)
    return RunIdentity(
        verifier=str(meta["verifier"]),
        layer_ids=tuple(ids),
        num_layers=num_layers,
        hidden_size=hidden,
        dtype=cfg.dtype,
        data_fingerprint=data_fingerprint(meta),
        num_shards=cfg.num_shards,
    )


def shard_samples(data: Path, shard_index: int, num_shards: int, splits: tuple[str, ...] = SPLITS) -> int:
    """How many samples worker `shard_index` processes (for the progress total)."""
    total = 0
    for s in splits:
        lo, hi = shard_range(len(TokenStore(Path(data) / s)), shard_index, num_shards)
        total += hi - lo
    return total


def lengths_of(data: Path, split: str) -> np.ndarray:
    return TokenStore(Path(data) / split).lengths()
