"""The trainer: wires data, model, optimizer and checkpoints together and runs the steps.

One optimizer step consumes a global batch of `rows_per_step` packed rows; each rank runs its share as
micro-batches (gradients synchronised on the last one), each row's loss is its masked mean, and the
step's objective is the mean over the global batch, so 1 process and N processes with the same global
batch compute the same update.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speculators_core.data.errors import IncompatibleDataError, InputError
from speculators_core.data.prepare import TOKEN_FREQ, data_fingerprint, read_meta
from speculators_core.data.store import TokenStore
from speculators_core.train.batches import OfflineSource, OnlineSource, epoch_plan, pack_rows, usable_ids
from speculators_core.train.checkpoint import (
    TrainState,
    latest_checkpoint,
    load_checkpoint,
    read_done,
    save_checkpoint,
    write_done,
)
from speculators_core.train.config import TrainConfig
from speculators_core.train.dflash import dflash_step
from speculators_core.train.distributed import DistEnv, barrier, no_sync, wrap_model
from speculators_core.train.model import build_draft
from speculators_core.train.optim import build_optimizer, build_scheduler
from speculators_core.train.ttt import Batch, MetricSums, step_counts, ttt_step
from speculators_core.train.vocab import build_vocab_mapping, coverage

Emit = Callable[[dict[str, Any]], None]
SAVE_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Trainer:
    def __init__(
        self, cfg: TrainConfig, env: DistEnv, *, emit: Emit | None = None, verifier_model: Any = None
    ) -> None:
        cfg.check()
        self.cfg = cfg
        self.env = env
        self.emit = emit if (emit is not None and env.is_main) else (lambda _r: None)
        self._verifier_model = verifier_model
        self.device = env.device
        # FSDP runs collectives in every forward: all ranks must run the same number of micro-batches,
        # which only the packed layout (one per row) guarantees.
        # DFlash draws --max-anchors per packed row (upstream's budget), so it always trains on packed rows.
        self.row_layout = "packed" if cfg.fsdp or cfg.algorithm == "dflash" else cfg.row_layout
        if cfg.precision == "auto":
            self.compute_dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        else:
            self.compute_dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
        # EAGLE-3 drafts read the concatenated aux layers; EAGLE-1/HASS the verifier's normed last state.
        self.feature = "last" if cfg.algorithm == "eagle" else "aux"

    # ------------------------------------------------------------------ set-up
    def _data(self) -> None:
        from speculators_core.models.verifier import read_verifier_config

        cfg = self.cfg
        self.meta = read_meta(cfg.data)
        self.store = TokenStore(cfg.data / "train")
        heldout_dir = cfg.data / "heldout"
        self.heldout = TokenStore(heldout_dir) if (heldout_dir / "offsets.npy").exists() else None
        self.vc = read_verifier_config(cfg.verifier, revision=cfg.revision)
        self.vocab_size = int(self.vc["vocab_size"])
        if self.vocab_size != int(self.meta["vocab_size"]):
            raise IncompatibleDataError(
                f"{cfg.data} was prepared for {self.meta['vocab_size']} tokens, {cfg.verifier} has "
                f"{self.vocab_size}; "
                "re-run prepare-data with this verifier"
            )
        self.total_seq_len = int(cfg.total_seq_len or self.meta["max_length"])
        act_dtype = torch.float32 if self.compute_dtype == torch.float32 else torch.bfloat16
        self._act_dtype = act_dtype
        if cfg.online:
            from speculators_core.data.features import check_layer_ids, default_layer_ids

            n = int(self.vc["num_hidden_layers"])
            if cfg.layer_ids:
                self.layer_ids = check_layer_ids(cfg.layer_ids, n)
            else:  # EAGLE-1/HASS reads only the last state: capture no aux layers
                self.layer_ids = [] if cfg.algorithm == "eagle" else default_layer_ids(n)
            self.has_val = self.heldout is not None and len(self.heldout) > 0
        else:
            from speculators_core.data.hidden_states import HiddenStatesReader

            assert cfg.hidden_states is not None
            expect = {
                "data_fingerprint": data_fingerprint(self.meta),
                "hidden_size": int(self.vc["hidden_size"]),
                "num_layers": int(self.vc["num_hidden_layers"]),
            }
            reader = HiddenStatesReader(cfg.hidden_states, "train", expect=expect)
            if len(reader) != len(self.store):
                raise IncompatibleDataError(
                    f"{cfg.hidden_states}: has {len(reader)} training samples, {cfg.data} has "
                    f"{len(self.store)}; re-run datagen"
                )
            if cfg.layer_ids and list(cfg.layer_ids) != list(reader.identity.layer_ids):
                raise IncompatibleDataError(
                    f"--layer-ids {cfg.layer_ids} but the hidden states hold layers "
                    f"{list(reader.identity.layer_ids)}"
                )
            self.layer_ids = list(reader.identity.layer_ids)
            self.source: Any = OfflineSource(
                reader, self.total_seq_len, act_dtype, self.row_layout, self.feature
            )
            val_reader = HiddenStatesReader(cfg.hidden_states, "heldout", expect=expect)
            if self.heldout is not None and len(val_reader) != len(self.heldout):
                raise IncompatibleDataError(
                    f"{cfg.hidden_states}: has {len(val_reader)} held-out samples, {cfg.data} has "
                    f"{len(self.heldout)}; re-run datagen"
                )
            self.val_source: Any = (
                OfflineSource(val_reader, self.total_seq_len, act_dtype, self.row_layout, self.feature)
                if len(val_reader)
                else None
            )
            self.has_val = self.val_source is not None

    def _online_sources(self) -> None:
        """Load the verifier (online mode): features come from its forward pass at every step."""
        from speculators_core.data.features import VerifierFeatures, load_verifier

        cfg = self.cfg
        storage = {"bfloat16": torch.bfloat16, "float32": torch.float32}.get(cfg.online_dtype)
        if storage is None:
            raise InputError(f"--online-dtype {cfg.online_dtype}: allowed bfloat16, float32")
        model = self._verifier_model or load_verifier(cfg.verifier, revision=cfg.revision, device=self.device)
        self.features = VerifierFeatures(model, self.layer_ids)
        pad = int(self.meta.get("pad_token_id") or 0)

        def online(store: TokenStore) -> OnlineSource:
            return OnlineSource(
                self.features,
                store,
                self.total_seq_len,
                storage_dtype=storage,
                dtype=self._act_dtype,
                batch_tokens=cfg.online_batch_tokens,
                pad_id=pad,
                mode=self.row_layout,
                feature=self.feature,
            )

        self.source = online(self.store)
        self.val_source = online(self.heldout) if self.has_val and self.heldout is not None else None

    def _model(self) -> None:
        from speculators_core.models import VerifierHead, load_verifier_tensors

        cfg = self.cfg
        freq = np.load(cfg.data / TOKEN_FREQ)
        d2t = t2d = None
        self.vocab_coverage = 1.0
        if self.draft_vocab_size < self.vocab_size:
            d2t, t2d = build_vocab_mapping(freq, self.draft_vocab_size)
            self.vocab_coverage = coverage(freq, t2d)
        elif self.draft_vocab_size > self.vocab_size:
            raise InputError(
                f"--draft-vocab-size {self.draft_vocab_size} exceeds the verifier vocabulary "
                f"{self.vocab_size}"
            )
        # The verifier's embeddings, final norm and lm_head, read once for the draft and both heads.
        tensors = load_verifier_tensors(cfg.verifier, ["embed", "norm", "lm_head"], revision=cfg.revision)
        self.draft = build_draft(
            tensors,
            self.vc,
            verifier_name=cfg.verifier_name or cfg.verifier,
            layer_ids=self.layer_ids,
            num_layers=cfg.num_layers,
            speculative_tokens=cfg.num_speculative_tokens,
            draft_vocab_size=self.draft_vocab_size,
            d2t=d2t,
            t2d=t2d,
            algorithm=cfg.algorithm,
            fusion_bias=cfg.fusion_bias,
            attn_impl=cfg.attn_impl,
            train_lm_head=cfg.train_lm_head,
            seed=cfg.seed,
            block_size=cfg.block_size,
            mask_token_id=cfg.mask_token_id,
        ).to(self.device)
        self.head = VerifierHead.from_tensors(self.vc, tensors, t2d=t2d).to(self.device)
        self.full_head = None
        if cfg.exact_accuracy and t2d is not None:
            self.full_head = VerifierHead.from_tensors(self.vc, tensors).to(self.device)
        param_dtype = self.compute_dtype if (cfg.fsdp and self.compute_dtype != torch.float32) else None
        self.model = wrap_model(self.draft, self.env, fsdp=cfg.fsdp, param_dtype=param_dtype)
        if hasattr(self.model, "broadcast_buffers"):
            self.model.broadcast_buffers = False  # d2t/t2d never change: no per-forward buffer broadcast

    def _plan(self) -> None:
        cfg, env = self.cfg, self.env
        self.rows_per_step = int(cfg.batch_rows or env.world_size)
        if self.rows_per_step % env.world_size:
            raise InputError(
                f"--batch-rows {self.rows_per_step} must be a multiple of the world size {env.world_size}"
            )
        lengths = self.store.lengths() - 1
        ids = usable_ids(lengths)
        self.plans = [
            epoch_plan(
                lengths,
                ids,
                seed=cfg.seed,
                epoch=e,
                total_seq_len=self.total_seq_len,
                rows_per_step=self.rows_per_step,
            )
            for e in range(cfg.epochs)
        ]
        if not self.plans[0]:
            raise InputError(
                f"{cfg.data}: the training data packs into fewer rows than one global batch of "
                f"{self.rows_per_step} "
                f"rows of {self.total_seq_len} tokens; lower --batch-rows or --total-seq-len, or add data"
            )
        total = sum(len(p) for p in self.plans)
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps is not None else total
        self.warmup = cfg.warmup_steps if cfg.warmup_steps is not None else self.total_steps // 100
        self.val_rows: list[list[int]] = []
        if self.has_val and self.heldout is not None and cfg.validate:
            hl = self.heldout.lengths() - 1
            self.val_rows = pack_rows(hl, usable_ids(hl), self.total_seq_len)
        self.run_key = cfg.run_key(
            {
                "data": data_fingerprint(self.meta),
                "layer_ids": self.layer_ids,
                "draft_vocab_size": self.draft_vocab_size,
                "rows_per_step": self.rows_per_step,
                "total_seq_len": self.total_seq_len,
                "warmup": self.warmup,
            }
        )

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        t_setup = time.perf_counter()
        self._data()
        self.draft_vocab_size = int(cfg.draft_vocab_size or self.vocab_size)
        if cfg.algorithm == "eagle" and self.draft_vocab_size != self.vocab_size:
            raise InputError(
                f"--draft-vocab-size {self.draft_vocab_size}: EAGLE-1/HASS drafts use the verifier's lm_head "
                f"over its whole vocabulary ({self.vocab_size}); drop the flag or use --algorithm eagle3"
            )
        self._plan()
        done = read_done(cfg.checkpoint_dir)
        if done is not None and done.get("run_key") == self.run_key and (cfg.output / "config.json").exists():
            return {**done["summary"], "reused": True}  # finished before: a re-run is cheap
        if cfg.online:
            self._online_sources()
        self._model()
        optimizer = build_optimizer(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = build_scheduler(
            optimizer, warmup=self.warmup, total=self.total_steps, schedule=cfg.scheduler
        )  # type: ignore[arg-type]
        state = TrainState(run_key=self.run_key)
        latest = latest_checkpoint(cfg.checkpoint_dir)
        if latest is not None:
            state = load_checkpoint(latest, self.model, optimizer, scheduler, self.env, run_key=self.run_key)
            self.emit(
                {"event": "resume", "checkpoint": str(latest), "step": state.step, "epoch": state.epoch}
            )
        self.emit(
            {
                "event": "train_start",
                "mode": "online" if cfg.online else "offline",
                "world_size": self.env.world_size,
                "rows_per_step": self.rows_per_step,
                "total_seq_len": self.total_seq_len,
                "total_steps": self.total_steps,
                "layer_ids": self.layer_ids,
                "draft_vocab_size": self.draft_vocab_size,
                "vocab_coverage": round(self.vocab_coverage, 4),
                "setup_s": round(time.perf_counter() - t_setup, 2),
            }
        )
        train_metrics, val = self._train(state, optimizer, scheduler)
        summary = self._finish(state, train_metrics, val)
        return summary

    def _train(
        self, state: TrainState, optimizer: Any, scheduler: Any
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        cfg, env = self.cfg, self.env
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        window = MetricSums(cfg.metric_steps, self.device)
        last_epoch = MetricSums(cfg.metric_steps, self.device)
        val: dict[str, Any] | None = None
        window_time = 0.0
        stop = False
        for epoch in range(state.epoch, cfg.epochs):
            plan = self.plans[epoch]
            start = state.step_in_epoch if epoch == state.epoch else 0
            epoch_metrics = MetricSums(cfg.metric_steps, self.device)
            self.model.train()
            for i in range(start, len(plan)):
                if cfg.max_steps is not None and state.step >= cfg.max_steps:
                    stop = True
                    break
                t_step = time.perf_counter()
                rows = plan[i][env.rank :: env.world_size]
                optimizer.zero_grad(set_to_none=True)
                for j, row in enumerate(rows):
                    micro = self.source.batches(row)
                    counts = step_counts(micro, cfg.ttt_steps)
                    for g, cpu_batch in enumerate(micro):
                        last_micro = j == len(rows) - 1 and g == len(micro) - 1
                        with no_sync(self.model, not last_micro):
                            # Anchors keyed by the row of the global batch: the same on a resume and
                            # whatever the world size.
                            seed = (cfg.seed, state.step, env.rank + j * env.world_size, g)
                            loss, m = self._step(self.model, self._on_device(cpu_batch), counts, seed)
                            (loss / len(rows)).backward()
                        window.add(m)
                        epoch_metrics.add(m)
                grad_norm = (
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip) if cfg.grad_clip > 0 else None
                )
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                state.step += 1
                state.epoch, state.step_in_epoch = epoch, i + 1
                window_time += (
                    time.perf_counter() - t_step
                )  # step time only: no logging/checkpoint/validation
                if state.step % cfg.log_every == 0 or i + 1 == len(plan):
                    window.reduce()
                    record = {
                        "event": "train_step",
                        "step": state.step,
                        "epoch": epoch,
                        **{k: _round(v) for k, v in window.summary().items()},
                        "lr": lr,
                        "grad_norm": _round(float(grad_norm)) if grad_norm is not None else None,
                        "tokens_per_s": round(window.tokens / max(window_time, 1e-9), 1),
                    }
                    state.tokens += window.tokens
                    state.elapsed += window_time
                    self.emit(record)
                    window = MetricSums(cfg.metric_steps, self.device)
                    window_time = 0.0
                if cfg.checkpoint_every_steps and state.step % cfg.checkpoint_every_steps == 0:
                    self._save(state, optimizer, scheduler)
            epoch_metrics.reduce()
            last_epoch = epoch_metrics
            if stop:
                break
            state.epoch, state.step_in_epoch = epoch + 1, 0
            self._save(state, optimizer, scheduler)
            if self.val_rows:
                val = self.validate()
                self.emit({"event": "validation", "epoch": epoch, **{k: _round(v) for k, v in val.items()}})
        if window_time > 0:  # steps after the last metrics line (same on every rank: collective is safe)
            window.reduce()
            state.tokens += window.tokens
            state.elapsed += window_time
        if stop and self.val_rows:
            val = self.validate()
            self.emit({"event": "validation", "epoch": state.epoch, **{k: _round(v) for k, v in val.items()}})
        self.train_seconds = state.elapsed
        return last_epoch.summary(), val

    def _step(
        self, model: Any, batch: Batch, counts: list[int], seed: tuple[int, ...], *, train: bool = True
    ) -> tuple[torch.Tensor, MetricSums]:
        """One micro-batch's loss and metrics: a TTT unroll (eagle3, eagle) or DFlash blocks."""
        cfg = self.cfg
        if cfg.algorithm == "dflash":
            generator = torch.Generator().manual_seed(hash(seed) & 0x7FFFFFFF)
            return dflash_step(
                model,
                self.draft,
                self.head,
                batch,
                max_anchors=cfg.max_anchors,
                weighting=cfg.dflash_weighting,  # type: ignore[arg-type]
                gamma=cfg.dflash_gamma,
                alpha=cfg.dpace_alpha,
                full_head=self.full_head,
                compute_dtype=self.compute_dtype,
                generator=generator,
            )
        return ttt_step(
            model,
            self.draft,
            self.head,
            batch,
            ttt_steps=cfg.ttt_steps,
            loss=cfg.loss,  # type: ignore[arg-type]
            step_decay=cfg.step_decay if train else 1.0,
            full_head=self.full_head,
            compute_dtype=self.compute_dtype,
            denominators=counts,
            # Validation reports the plain per-step loss, comparable across weightings.
            weighting=cfg.step_weighting if train else "uniform",  # type: ignore[arg-type]
        )

    def _on_device(self, batch: Batch) -> Batch:
        batch = batch.to(self.device)
        if self.feature == "last":  # the feature vLLM hands an EAGLE-1 draft: the verifier's final norm
            batch.hidden = self.head.normalize(batch.hidden)
        return batch

    def _save(self, state: TrainState, optimizer: Any, scheduler: Any) -> None:
        if self.env.is_main:
            self.cfg.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        barrier()
        path = save_checkpoint(
            self.cfg.checkpoint_dir,
            state,
            self.model,
            optimizer,
            scheduler,
            self.env,
            keep=self.cfg.keep_checkpoints,
        )
        self.emit({"event": "checkpoint", "step": state.step, "path": str(path)})

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Loss and acceptance metrics on the held-out rows (every rank runs the same number of forwards)."""
        env = self.env
        self.model.eval()
        runner = self.model if self.cfg.fsdp else self.draft  # FSDP must run its collectives on every rank
        per_rank = math.ceil(len(self.val_rows) / env.world_size)
        sums = MetricSums(self.cfg.metric_steps, self.device)
        for i in range(per_rank):
            idx = env.rank + i * env.world_size
            micro = self.val_source.batches(self.val_rows[idx % len(self.val_rows)])
            counts = step_counts(micro, self.cfg.ttt_steps)
            for g, batch in enumerate(micro):
                _, m = self._step(
                    runner, self._on_device(batch), counts, (self.cfg.seed, -1, idx, g), train=False
                )
                if idx < len(self.val_rows):
                    sums.add(m)
        sums.reduce()
        self.model.train()
        return sums.summary()

    def _finish(self, state: TrainState, train: dict[str, Any], val: dict[str, Any] | None) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        cfg, env = self.cfg, self.env
        full = get_model_state_dict(
            self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        best = val or train
        summary = {
            "step": "train",
            "mode": "online" if cfg.online else "offline",
            "algorithm": cfg.algorithm,
            "epochs": cfg.epochs,
            "steps": state.step,
            "loss": _round(train["loss"]),
            "acc": [_round(a) for a in best["acc"]],
            "cond_acc": [_round(a) for a in best["cond_acc"]],
            "est_accept_len": _round(best["est_accept_len"]),
            "metrics_from": "heldout" if val else "train",
            "train_acc": [_round(a) for a in train["acc"]],
            "val_loss": _round(val["loss"]) if val else None,
            "tokens": state.tokens,
            "tokens_per_s": round(state.tokens / max(self.train_seconds, 1e-9), 1),
            "train_seconds": round(self.train_seconds, 2),
            "world_size": env.world_size,
            "draft_vocab_size": self.draft_vocab_size,
            "vocab_coverage": round(self.vocab_coverage, 4),
            "layer_ids": self.layer_ids,
            "peak_memory_mb": round(peak_memory_mb(self.device), 1),
            "output": str(cfg.output),
        }
        if env.is_main:
            out = type(self.draft)(self.draft.config, attn_implementation=self.draft.attn_implementation)
            stored = out.persistent_state()  # the format's tensors (not the verifier's borrowed ones)
            out.load_weights({k: v for k, v in full.items() if k in stored}, source="trained weights")
            out.to(SAVE_DTYPES[cfg.save_dtype]).save_pretrained(cfg.output)
            write_done(cfg.checkpoint_dir, {"run_key": self.run_key, "summary": summary})
        barrier()
        return summary


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, list):
        return [_round(x) for x in v]
    return v


def output_exists(path: Path) -> bool:
    return (path / "config.json").exists()
