"""`speculators train`: EAGLE-3 (or EAGLE-1/HASS) with train-time test, offline (stored hidden states) or
online.

Multi-GPU / multi-node: run it under torchrun, or let it launch torchrun itself from NNODES,
NPROC_PER_NODE, NODE_RANK (or JOB_COMPLETION_INDEX), MASTER_ADDR and MASTER_PORT (what the operator sets
on the pods of an Indexed Job with a headless Service).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from speculators_core.cli.common import ExitCode, UserError, emit_json_line, layer_ids_arg, write_summary

NAME = "train"
HELP = "train an EAGLE-3 or EAGLE/HASS draft with train-time test (offline from hidden states, or online)"
EXIT_DIR_ENV = "SPECULATORS_EXIT_CODE_DIR"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument("--verifier", required=True, metavar="V", help="verifier directory or hub id")
    p.add_argument("--verifier-name", help="verifier id recorded in config.json (default: --verifier)")
    p.add_argument("--data", required=True, metavar="DIR", help="prepare-data output directory")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--hidden-states", metavar="DIR", help="datagen output (offline mode)")
    mode.add_argument(
        "--online", action="store_true", help="run the verifier during training (no hidden states on disk)"
    )
    p.add_argument("--output", required=True, metavar="DIR", help="speculators-format output directory")
    p.add_argument(
        "--checkpoint-dir", required=True, metavar="DIR", help="checkpoints (resumed automatically)"
    )
    p.add_argument(
        "--algorithm",
        default="eagle3",
        choices=("eagle3", "eagle", "dflash"),
        help="eagle3 (default); eagle: the EAGLE-1/HASS format, trained with HASS's context alignment "
        "(the same TTT unroll) over the verifier's vocabulary; dflash: a block per pass (block diffusion)",
    )
    p.add_argument(
        "--no-fusion-bias",
        action="store_true",
        help="eagle only: EAGLE-1/2's fusion layer without HASS's bias",
    )
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--scheduler", choices=("cosine", "linear", "constant"), default="cosine")
    p.add_argument("--warmup-steps", type=int, help="default: 1%% of the total steps")
    p.add_argument("--ttt-steps", type=int, default=3, help="train-time-test depth (default 3)")
    p.add_argument("--ttt-step-loss-decay", type=float, default=1.0, help="loss weight decay per TTT step")
    p.add_argument(
        "--step-weighting",
        choices=("acceptance", "uniform"),
        default="acceptance",
        help="eagle3/eagle: acceptance (default) weighs a start's step-s loss by the draft's probability "
        "that its steps before s are accepted; uniform: every step's rows alike (upstream)",
    )
    p.add_argument(
        "--loss",
        choices=("kl", "ce", "lk"),
        default="kl",
        help="eagle3/eagle: kl (upstream's default), ce (to the verifier's argmax), lk (hybrid LK: KL "
        "blended into the acceptance rate as it grows) (dflash: CE, see below)",
    )
    p.add_argument("--draft-vocab-size", type=int, help="default: the verifier's vocabulary")
    p.add_argument("--num-layers", type=int, help="draft decoder layers (default 1; dflash 5)")
    p.add_argument(
        "--num-speculative-tokens", type=int, help="k written to config.json (default 3; dflash block-1)"
    )
    dflash = p.add_argument_group("dflash (upstream 0.9.0's recipe)")
    dflash.add_argument("--block-size", type=int, default=16, help="tokens per block (default 16)")
    dflash.add_argument(
        "--mask-token-id", type=int, help="the MASK token (default: the verifier vocabulary's last id)"
    )
    dflash.add_argument("--max-anchors", type=int, default=512, help="blocks per packed row (default 512)")
    dflash.add_argument(
        "--dflash-loss-weighting",
        choices=("dpace", "fixed-exp-decay"),
        default="dpace",
        help="per-position weight of the CE loss (default dpace)",
    )
    dflash.add_argument("--dflash-decay-gamma", type=float, default=4.0, help="fixed-exp-decay's gamma")
    dflash.add_argument("--dpace-alpha", type=float, default=0.5, help="D-PACE's smoothing (0, 1]")
    p.add_argument(
        "--layer-ids",
        type=layer_ids_arg,
        metavar="I,J,K",
        help="online mode: aux layers (default 2,L//2,L-3)",
    )
    p.add_argument(
        "--total-seq-len", type=int, help="tokens per packed row (default: prepare-data's --max-length)"
    )
    p.add_argument(
        "--batch-rows", type=int, help="packed rows per optimizer step, all ranks (default: world size)"
    )
    p.add_argument("--checkpoint-every-steps", type=int, default=500, help="0: only at the end of each epoch")
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--fsdp", action="store_true", help="shard the draft with FSDP2 (default: DDP)")
    p.add_argument("--attn-impl", choices=("sdpa", "eager"), default="sdpa")
    p.add_argument(
        "--row-layout",
        choices=("grouped", "packed"),
        default="grouped",
        help="grouped: a packed row's documents run as length-grouped padded rows (attention sum(n^2), "
        "not T^2); packed: one row with a document mask (always with --fsdp)",
    )
    p.add_argument(
        "--precision", choices=("auto", "bf16", "fp32"), default="auto", help="auto: bf16 on GPU, fp32 on CPU"
    )
    p.add_argument("--save-dtype", choices=("bfloat16", "float32", "float16"), default="bfloat16")
    p.add_argument(
        "--train-lm-head",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train the draft's lm_head (default: on for eagle3, as EAGLE-3's own recipe; upstream "
        "speculators keeps it frozen at the verifier's rows: --no-train-lm-head)",
    )
    p.add_argument(
        "--no-exact-accuracy", action="store_true", help="accuracy against the draft-vocabulary argmax only"
    )
    p.add_argument(
        "--online-dtype", choices=("bfloat16", "float32"), default="bfloat16", help="online: feature rounding"
    )
    p.add_argument("--online-batch-tokens", type=int, default=16384)
    p.add_argument("--log-every", type=int, default=1, help="metrics line every N steps")
    p.add_argument("--no-validate", action="store_true", help="skip the held-out evaluation after each epoch")
    p.add_argument("--device", help="torch device (default: cuda:LOCAL_RANK if available, else cpu)")
    p.add_argument("--revision", help="hub revision of the verifier")
    p.add_argument("--summary-path", metavar="F", help="write the summary JSON here")


def _config(args: argparse.Namespace):
    from speculators_core.train.config import TrainConfig

    return TrainConfig(
        verifier=args.verifier,
        verifier_name=args.verifier_name,
        data=Path(args.data),
        output=Path(args.output),
        checkpoint_dir=Path(args.checkpoint_dir),
        hidden_states=Path(args.hidden_states) if args.hidden_states else None,
        online=args.online,
        revision=args.revision,
        algorithm=args.algorithm,
        fusion_bias=not args.no_fusion_bias,
        epochs=args.epochs,
        max_steps=args.max_steps,
        lr=args.lr,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        scheduler=args.scheduler,
        warmup_steps=args.warmup_steps,
        ttt_steps=args.ttt_steps,
        step_decay=args.ttt_step_loss_decay,
        step_weighting=args.step_weighting,
        loss=args.loss,
        draft_vocab_size=args.draft_vocab_size,
        num_layers=args.num_layers,
        num_speculative_tokens=args.num_speculative_tokens,
        block_size=args.block_size,
        mask_token_id=args.mask_token_id,
        max_anchors=args.max_anchors,
        dflash_weighting=args.dflash_loss_weighting,
        dflash_gamma=args.dflash_decay_gamma,
        dpace_alpha=args.dpace_alpha,
        layer_ids=args.layer_ids,
        total_seq_len=args.total_seq_len,
        batch_rows=args.batch_rows,
        checkpoint_every_steps=args.checkpoint_every_steps,
        keep_checkpoints=args.keep_checkpoints,
        seed=args.seed,
        fsdp=args.fsdp,
        attn_impl=args.attn_impl,
        row_layout=args.row_layout,
        precision=args.precision,
        save_dtype=args.save_dtype,
        train_lm_head=args.train_lm_head,
        exact_accuracy=not args.no_exact_accuracy,
        online_dtype=args.online_dtype,
        online_batch_tokens=args.online_batch_tokens,
        log_every=max(1, args.log_every),
        validate=not args.no_validate,
        device=args.device,
    )


def _launch() -> int:
    """Re-run this command under torchrun; the pod exits with the workers' permanent code if any."""
    from speculators_core.train.distributed import torchrun_command

    if len(sys.argv) < 2 or sys.argv[1] != NAME:
        raise UserError(
            "multi-process training must be started from the command line (speculators train ...)"
        )
    try:
        cmd = torchrun_command(sys.argv[1:])
    except ValueError as exc:
        raise UserError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="speculators-exit-") as exit_dir:
        rc = subprocess.run(cmd, env={**os.environ, EXIT_DIR_ENV: exit_dir}, check=False).returncode
        codes = []
        for f in Path(exit_dir).glob("rank-*.json"):
            codes.append(int(json.loads(f.read_text())["exit_code"]))
    for permanent in (ExitCode.USAGE, ExitCode.INCOMPATIBLE):
        if permanent in codes:
            return int(permanent)
    return rc


def run(args: argparse.Namespace) -> int:
    from speculators_core.train.distributed import needs_launch

    try:
        launch = needs_launch()
    except ValueError as exc:  # a malformed NNODES / NPROC_PER_NODE
        raise UserError(str(exc)) from None
    if launch:
        return _launch()
    from speculators_core.data.errors import cli_errors
    from speculators_core.train.distributed import barrier, init_distributed, shutdown
    from speculators_core.train.loop import Trainer

    env = None
    try:
        with cli_errors():
            cfg = _config(args)
            env = init_distributed(args.device)
            summary = Trainer(cfg, env, emit=emit_json_line).run()
            # Every rank reaches the teardown together (rank 0 may still be writing the model).
            barrier()
    except UserError as exc:
        _record_exit(int(exc.exit_code), str(exc))
        raise
    finally:
        shutdown()
    if env is not None and env.is_main:
        write_summary(args.summary_path, summary)
        emit_json_line({"event": "done", **summary})
    if env is not None and env.distributed:
        # A torchrun child whose work is written: leave without interpreter finalization, where Gloo's
        # C++ threads can still hold Python objects and abort the process (pytorch/pytorch#179291).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(ExitCode.OK))
    return ExitCode.OK


def _record_exit(code: int, message: str) -> None:
    directory = os.environ.get(EXIT_DIR_ENV)
    if directory:
        rank = os.environ.get("RANK", "0")
        Path(directory, f"rank-{rank}.json").write_text(json.dumps({"exit_code": code, "message": message}))
