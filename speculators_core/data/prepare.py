"""prepare-data: chat datasets -> token ids + assistant loss masks + token frequencies.

Output directory (written to a temporary sibling, renamed when complete):
    meta.json          what was done: verifier, vocab size, max length, counts, skip reasons, fingerprints
    train/             token store (see store.py) of the training samples
    heldout/           token store of the held-out samples (evaluation prompts, validation)
    token_freq.npy     int64 [verifier vocab]: counts of train tokens under the loss mask (draft vocabulary)

Re-running with the same inputs is a no-op (meta.json's `inputs_hash`); different inputs rebuild it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from speculators_core.data.chat import ChatEncoder, Encoded, Reasoning, RowTemplateError
from speculators_core.data.errors import IncompatibleDataError, InputError
from speculators_core.data.fsutil import atomic_dir, write_json_atomic
from speculators_core.data.loading import Row, iter_rows, resolve_local
from speculators_core.data.store import TokenStoreWriter

FORMAT = "speculators-core/prepared-data/v1"
INPUTS_VERSION = 2  # bump when the same inputs should give different output
META = "meta.json"
TOKEN_FREQ = "token_freq.npy"
REGEN_BLOCK = 256  # conversations regenerated per batch round

LongSamples = Literal["truncate", "skip"]


@dataclasses.dataclass
class PrepareConfig:
    verifier: str
    data: list[str]
    output: Path
    max_length: int = 2048
    max_samples: int | None = None
    regenerate: bool = False
    endpoint: str | None = None
    reasoning: Reasoning = "keep"
    holdout_fraction: float = 0.05
    seed: int = 42
    long_samples: LongSamples = "truncate"
    regen_max_tokens: int = 1024
    regen_temperature: float = 0.0
    regen_retries: int = 4
    revision: str | None = None

    def validate(self) -> None:
        if self.max_length < 8:
            raise InputError(f"--max-length must be >= 8, got {self.max_length}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise InputError(f"--holdout-fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.max_samples is not None and self.max_samples < 1:
            raise InputError(f"--max-samples must be >= 1, got {self.max_samples}")
        if self.endpoint and not self.regenerate:
            raise InputError("--endpoint is only used with --regenerate-responses")
        if not self.data:
            raise InputError("give at least one --data source")


def inputs_hash(cfg: PrepareConfig) -> str:
    """Identity of a run: flags plus each local source's size (hub sources by id)."""
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "output"}
    sources = []
    for src in cfg.data:
        local = resolve_local(src)
        stat = local.stat() if local is not None and local.is_file() else None
        sources.append([src, stat.st_size if stat else None])
    blob = json.dumps(
        {"cfg": fields, "sources": sources, "format": FORMAT, "v": INPUTS_VERSION},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def is_heldout(messages: list[dict[str, Any]], seed: int, fraction: float) -> bool:
    """Deterministic by content: the same conversation lands in the same split whatever the row order."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"{seed}:{json.dumps(messages, sort_keys=True)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def load_tokenizer(verifier: str, revision: str | None = None) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(verifier, revision=revision)


class _Split:
    def __init__(self, directory: Path, vocab_size: int, count_freq: bool) -> None:
        self.writer = TokenStoreWriter(directory)
        self.freq = np.zeros(vocab_size, dtype=np.int64) if count_freq else None
        self.masked_tokens = 0

    def add(self, sample: Encoded) -> None:
        self.writer.append(sample.input_ids, sample.loss_mask)
        mask = np.asarray(sample.loss_mask, dtype=bool)
        self.masked_tokens += int(mask.sum())
        if self.freq is not None:
            ids = np.asarray(sample.input_ids, dtype=np.int64)[mask]
            self.freq += np.bincount(ids, minlength=len(self.freq))[: len(self.freq)]


def prepare(
    cfg: PrepareConfig,
    *,
    tokenizer: Any = None,
    vocab_size: int | None = None,
    generator_factory: Callable[[], Any] | None = None,
    on_progress: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run prepare-data; returns meta.json's content. Raises TemplateError / DataSourceError / ValueError."""
    cfg.validate()
    h = inputs_hash(cfg)
    meta_path = cfg.output / META
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("inputs_hash") == h and meta.get("format") == FORMAT:
                meta["reused"] = True
                return meta
        except (OSError, json.JSONDecodeError):
            pass  # unreadable: rebuild
    tok = tokenizer if tokenizer is not None else load_tokenizer(cfg.verifier, cfg.revision)
    if vocab_size is None:
        from speculators_core.models.verifier import read_verifier_config

        vocab_size = int(read_verifier_config(cfg.verifier, revision=cfg.revision)["vocab_size"])
    if len(tok) > vocab_size:
        raise IncompatibleDataError(
            f"the tokenizer of {cfg.verifier} has {len(tok)} tokens but the model's vocab_size is "
            f"{vocab_size}; "
            "the tokenizer does not belong to this model"
        )
    encoder = ChatEncoder(tok, cfg.reasoning, name=cfg.verifier)
    generator = None
    if cfg.regenerate:
        generator = generator_factory() if generator_factory else default_generator(cfg, tok)

    skipped: Counter[str] = Counter()
    stats: Counter[str] = Counter()
    examples: dict[str, str] = {}

    with atomic_dir(cfg.output) as tmp:
        train = _Split(tmp / "train", vocab_size, count_freq=True)
        heldout = _Split(tmp / "heldout", vocab_size, count_freq=False)

        def emit(messages: list[dict[str, Any]], held: bool) -> None:
            try:
                samples = encoder.encode(messages)
            except RowTemplateError as exc:
                skipped["template_error"] += 1
                examples.setdefault("template_error", str(exc)[:200])
                return
            if len(samples) > 1:
                stats["history_splits"] += len(samples) - 1
            for s in samples:
                if len(s.input_ids) > cfg.max_length:
                    if cfg.long_samples == "skip":
                        skipped["too_long"] += 1
                        continue
                    stats["truncated"] += 1
                    s = Encoded(s.input_ids[: cfg.max_length], s.loss_mask[: cfg.max_length])
                if not any(s.loss_mask):
                    skipped["no_assistant_tokens"] += 1
                    continue
                (heldout if held else train).add(s)

        pending: list[tuple[list[dict[str, Any]], bool]] = []

        def flush() -> None:
            if not pending:
                return
            if generator is not None:
                # Held-out samples too: validation then measures on-policy acceptance, like training.
                from speculators_core.data.regenerate import regenerate

                new = regenerate([msgs for msgs, _ in pending], generator)
                for i, msgs in enumerate(new):
                    held = pending[i][1]
                    if any(
                        m["role"] == "assistant"
                        and not m["content"].strip()
                        and not m.get("reasoning_content")
                        for m in msgs
                    ):
                        skipped["regenerated_empty"] += 1
                        pending[i] = ([], held)
                    else:
                        pending[i] = (msgs, held)
                        stats["regenerated"] += 1
            for msgs, held in pending:
                if msgs:
                    emit(msgs, held)
            pending.clear()

        conversations = 0
        rows = 0
        for row in _all_rows(cfg.data, open_ended=cfg.regenerate):
            rows += 1
            if row.skip is not None:
                skipped[row.skip] += 1
                examples.setdefault(row.skip, f"{row.source} row {row.index}: {row.detail}"[:200])
                continue
            assert row.messages is not None
            conversations += 1
            pending.append((row.messages, is_heldout(row.messages, cfg.seed, cfg.holdout_fraction)))
            if len(pending) >= (REGEN_BLOCK if generator is not None else 1):
                flush()
            if on_progress is not None:
                on_progress(rows, {"samples": len(train.writer), "skipped": sum(skipped.values())})
            if cfg.max_samples is not None and conversations >= cfg.max_samples:
                break
        flush()

        if len(train.writer) == 0:
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())) or "no rows"
            raise InputError(
                f"--data {' '.join(cfg.data)}: no usable training sample ({rows} rows; skipped: {reasons}); "
                + (f"e.g. {next(iter(examples.values()))}" if examples else "check the dataset")
            )
        train_fp = train.writer.close()
        heldout_fp = heldout.writer.close()
        assert train.freq is not None
        np.save(tmp / TOKEN_FREQ, train.freq)
        meta = {
            "format": FORMAT,
            "inputs_hash": h,
            "verifier": cfg.verifier,
            "revision": cfg.revision,
            "vocab_size": vocab_size,
            "tokenizer_size": len(tok),
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            "max_length": cfg.max_length,
            "reasoning": cfg.reasoning,
            "regenerated": cfg.regenerate,
            "seed": cfg.seed,
            "holdout_fraction": cfg.holdout_fraction,
            "sources": cfg.data,
            "rows": rows,
            "conversations": conversations,
            "train": {
                "samples": len(train.writer),
                "tokens": train.writer.num_tokens,
                "assistant_tokens": train.masked_tokens,
                "fingerprint": train_fp,
            },
            "heldout": {
                "samples": len(heldout.writer),
                "tokens": heldout.writer.num_tokens,
                "assistant_tokens": heldout.masked_tokens,
                "fingerprint": heldout_fp,
            },
            "skipped": dict(sorted(skipped.items())),
            "skip_examples": examples,
            "stats": dict(sorted(stats.items())),
            "mask_method": "generation_tags" if encoder.uses_generation_tags else "render_boundary",
        }
        write_json_atomic(tmp / META, meta)
    return meta


def _all_rows(sources: Iterable[str], *, open_ended: bool = False) -> Iterable[Row]:
    for src in sources:
        yield from iter_rows(src, open_ended=open_ended)


def default_generator(cfg: PrepareConfig, tok: Any) -> Any:
    from speculators_core.data.regenerate import EndpointGenerator, LocalGenerator

    if cfg.endpoint:
        return EndpointGenerator(
            cfg.endpoint,
            max_tokens=cfg.regen_max_tokens,
            temperature=cfg.regen_temperature,
            retries=cfg.regen_retries,
            api_key=os.environ.get("OPENAI_API_KEY"),
        )
    import torch
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = (
        AutoModelForCausalLM.from_pretrained(cfg.verifier, revision=cfg.revision, dtype=dtype)
        .to(device)
        .eval()
    )
    return LocalGenerator(model, tok, max_new_tokens=cfg.regen_max_tokens, temperature=cfg.regen_temperature)


def data_fingerprint(meta: dict[str, Any]) -> str:
    """Identity of a prepared directory's content (both splits): hidden states made from it carry it."""
    parts = f"{meta['train']['fingerprint']}:{meta['heldout']['fingerprint']}"
    return hashlib.sha256(parts.encode()).hexdigest()


def read_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / META
    if not path.exists():
        raise FileNotFoundError(
            f"{directory}: no {META}; this is not a prepare-data output (run `speculators prepare-data`)"
        )
    return json.loads(path.read_text())
