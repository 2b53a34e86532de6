"""TrainConfig: every setting of `speculators train` (the flags mirror SpeculatorTraining.spec.training)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from speculators_core.data.errors import InputError
from speculators_core.train.losses import LOSSES
from speculators_core.train.optim import SCHEDULES
from speculators_core.train.ttt import STEP_WEIGHTINGS

ALGORITHMS = ("eagle3", "eagle", "dflash")
DFLASH_WEIGHTINGS = ("dpace", "fixed-exp-decay")


@dataclasses.dataclass
class TrainConfig:
    verifier: str
    data: Path
    output: Path
    checkpoint_dir: Path
    hidden_states: Path | None = None
    online: bool = False
    verifier_name: str | None = None  # recorded in config.json (a hub id lets vLLM's short form work)
    revision: str | None = None
    algorithm: str = "eagle3"  # or "eagle": EAGLE-1/HASS format, trained with the same TTT unroll; or dflash
    fusion_bias: bool = True  # eagle only: HASS's fusion_fc bias (False: the EAGLE-1/2 layout)
    epochs: int = 3
    max_steps: int | None = None
    lr: float = 1e-4
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    scheduler: str = "cosine"
    warmup_steps: int | None = None  # default: 1% of the total steps (upstream)
    ttt_steps: int = 3
    step_decay: float = 1.0
    step_weighting: str = "acceptance"  # or "uniform" (upstream); see train/ttt.py
    loss: str = "kl"
    draft_vocab_size: int | None = None  # default: the verifier vocabulary (upstream)
    num_layers: int | None = None  # default 1 (eagle3, eagle), 5 (dflash: upstream's recipe)
    num_speculative_tokens: int | None = None  # default 3, or block_size - 1 (dflash)
    # dflash (upstream 0.9.0's recipe and defaults)
    block_size: int = 16
    mask_token_id: int | None = None  # default: the verifier vocabulary's last id (a reserved token)
    max_anchors: int = 512
    dflash_weighting: str = "dpace"
    dflash_gamma: float = 4.0
    dpace_alpha: float = 0.5
    layer_ids: list[int] | None = None  # online only; offline uses the shards'
    total_seq_len: int | None = None  # packed row length; default: prepare-data's --max-length
    batch_rows: int | None = None  # global rows per optimizer step; default: world size
    checkpoint_every_steps: int = 500
    keep_checkpoints: int = 2
    seed: int = 42
    fsdp: bool = False
    attn_impl: str = "sdpa"
    row_layout: str = "grouped"  # a packed row's documents as length-grouped padded rows, or one packed row
    precision: str = "auto"  # bf16 autocast on GPU, fp32 on CPU
    save_dtype: str = "bfloat16"
    train_lm_head: bool | None = None  # default: True for eagle3 (its format stores lm_head), else False
    exact_accuracy: bool = True
    online_dtype: str = "bfloat16"
    online_batch_tokens: int = 16384
    log_every: int = 1
    validate: bool = True
    device: str | None = None

    @property
    def metric_steps(self) -> int:
        """Positions the metrics run over: TTT steps, or a DFlash block's drafted slots."""
        return self.block_size - 1 if self.algorithm == "dflash" else self.ttt_steps

    def check(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise InputError(f"--algorithm {self.algorithm}: allowed {', '.join(ALGORITHMS)}")
        dflash = self.algorithm == "dflash"
        if self.num_layers is None:
            self.num_layers = 5 if dflash else 1
        if self.num_speculative_tokens is None:
            self.num_speculative_tokens = self.block_size - 1 if dflash else 3
        if self.train_lm_head is None:
            # EAGLE-3's own recipe trains the draft's lm_head (stored in the format); upstream freezes it at
            # the verifier's rows. EAGLE-1/HASS and full-vocabulary DFlash borrow the verifier's head.
            self.train_lm_head = self.algorithm == "eagle3"
        if self.train_lm_head and self.algorithm == "eagle":
            raise InputError(
                "--train-lm-head: an EAGLE-1/HASS draft has no lm_head of its own (the format borrows the "
                "verifier's); drop the flag or use --algorithm eagle3"
            )
        if self.step_weighting not in STEP_WEIGHTINGS:
            raise InputError(f"--step-weighting {self.step_weighting}: allowed {', '.join(STEP_WEIGHTINGS)}")
        if dflash:
            if not 2 <= self.block_size <= 64:
                raise InputError(f"--block-size must be 2-64, got {self.block_size}")
            if self.num_speculative_tokens > self.block_size - 1:
                raise InputError(
                    f"--num-speculative-tokens {self.num_speculative_tokens}: a block of {self.block_size} "
                    f"drafts at most {self.block_size - 1}; lower it or raise --block-size"
                )
            if self.dflash_weighting not in DFLASH_WEIGHTINGS:
                raise InputError(
                    f"--dflash-loss-weighting {self.dflash_weighting}: allowed {', '.join(DFLASH_WEIGHTINGS)}"
                )
            if not 0.0 < self.dpace_alpha <= 1.0:
                raise InputError(f"--dpace-alpha must be in (0, 1], got {self.dpace_alpha}")
            if self.max_anchors < 1:
                raise InputError(f"--max-anchors must be >= 1, got {self.max_anchors}")
        if self.algorithm == "eagle" and self.num_layers != 1:
            raise InputError(
                f"--num-layers {self.num_layers}: EAGLE-1/HASS drafts have exactly one decoder layer "
                "(the format's `transformer`); use --num-layers 1 or --algorithm eagle3"
            )
        if (self.hidden_states is None) == (not self.online):
            raise InputError("give exactly one of --hidden-states DIR (offline) or --online")
        if self.loss not in LOSSES:
            raise InputError(f"--loss {self.loss}: allowed {', '.join(LOSSES)}")
        if self.scheduler not in SCHEDULES:
            raise InputError(f"--scheduler {self.scheduler}: allowed {', '.join(SCHEDULES)}")
        if self.ttt_steps < 1 or self.num_speculative_tokens < 1 or self.num_layers < 1 or self.epochs < 1:
            raise InputError("--ttt-steps, --num-speculative-tokens, --num-layers and --epochs must be >= 1")
        if self.lr <= 0:
            raise InputError(f"--lr must be positive, got {self.lr}")
        if self.batch_rows is not None and self.batch_rows < 1:
            raise InputError("--batch-rows must be >= 1")
        if self.attn_impl not in ("sdpa", "eager"):
            raise InputError(f"--attn-impl {self.attn_impl}: allowed sdpa, eager")
        if self.row_layout not in ("grouped", "packed"):
            raise InputError(f"--row-layout {self.row_layout}: allowed grouped, packed")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise InputError(f"--precision {self.precision}: allowed auto, bf16, fp32")
        if self.save_dtype not in ("bfloat16", "float32", "float16"):
            raise InputError(f"--save-dtype {self.save_dtype}: allowed bfloat16, float32, float16")

    def run_key(self, extra: dict[str, Any]) -> str:
        """Identity of a training run for resuming: what changes the result (not paths, logging, mode)."""
        ignore = {
            "output",
            "checkpoint_dir",
            "hidden_states",
            "online",
            "log_every",
            "validate",
            "device",
            "keep_checkpoints",
            "checkpoint_every_steps",
            "verifier",
            "revision",
            "online_batch_tokens",
        }
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in ignore}
        blob = json.dumps({"cfg": fields, **extra}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]
