"""Training speed: our trainer against upstream speculators 0.9.0's, same data, same config, side by side.
Reports real (non-padding) training tokens/s, peak memory (RSS of each trainer's process) and the
acceptance each trained draft reaches (offline eval, k=4, same prompts). Prints one JSON line.

    .venv/bin/python benchmarks/train_speed.py [--epochs 1] [--repeats 2] [--threads 1]

Upstream runs on CPU with its eager loss and sdpa attention (see upstream_train.py); both use AdamW,
cosine decay, the same warm-up, draft vocabulary, TTT depth, packed length and seed. The runs alternate
(ours, upstream, ours, ...) and the best of each is kept, so other load on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import shutil

from _common import (
    WORK,
    export_for_upstream,
    prepare_and_datagen,
    speculators,
    stack,
    summary_of,
    token_freq_for_upstream,
    upstream_train,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--total-seq-len", type=int, default=1024)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--draft-vocab-size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-samples", type=int, default=40)
    ap.add_argument("--attn-impl", default="sdpa", choices=("sdpa", "eager"))
    args = ap.parse_args()
    t = args.threads
    st = stack()
    prepared, hs = prepare_and_datagen(st, max_length=args.max_length, threads=t)
    data_path = WORK / f"upstream-data-{prepared.parent.name}"
    ratio = export_for_upstream(prepared, hs, data_path)
    token_freq_for_upstream(prepared, data_path)
    out = WORK / "train-speed"
    meta = summary_of(prepared / "meta.json")
    warmup = max(1, args.epochs * (meta["train"]["tokens"] // args.total_seq_len) // 100)
    runs: dict[str, dict] = {}
    for rep in range(args.repeats):
        shutil.rmtree(out / "ours", ignore_errors=True)
        shutil.rmtree(out / "ours-ckpt", ignore_errors=True)
        r = speculators(
            "train",
            "--verifier",
            st.verifier,
            "--data",
            prepared,
            "--hidden-states",
            hs,
            "--lr",
            args.lr,
            "--epochs",
            args.epochs,
            "--total-seq-len",
            args.total_seq_len,
            "--draft-vocab-size",
            args.draft_vocab_size,
            "--warmup-steps",
            warmup,
            "--seed",
            42,
            "--num-speculative-tokens",
            4,
            "--attn-impl",
            args.attn_impl,
            "--no-validate",
            "--checkpoint-every-steps",
            0,
            "--log-every",
            50,
            "--output",
            out / "ours",
            "--checkpoint-dir",
            out / "ours-ckpt",
            "--summary-path",
            out / "ours.json",
            threads=t,
        )
        s = summary_of(out / "ours.json")
        cur = {
            "tokens": s["tokens"],
            "train_seconds": s["train_seconds"],
            "tokens_per_s": s["tokens_per_s"],
            "steps": s["steps"],
            "peak_rss_mb": round(r.peak_rss_mb, 1),
        }
        if "ours" not in runs or cur["tokens_per_s"] > runs["ours"]["tokens_per_s"]:
            runs["ours"] = cur
        stats, up, final = upstream_train(
            st,
            data_path,
            out / "upstream",
            ratio=ratio,
            epochs=args.epochs,
            lr=args.lr,
            total_seq_len=args.total_seq_len,
            draft_vocab_size=args.draft_vocab_size,
            warmup=warmup,
            seed=42,
            ttt_steps=3,
            threads=t,
        )
        cur = {
            "tokens": stats["tokens"],
            "train_seconds": round(stats["train_seconds"], 2),
            "tokens_per_s": round(stats["tokens_per_s"], 1),
            "steps": stats["steps"],
            "peak_rss_mb": round(up.peak_rss_mb, 1),
        }
        if "upstream" not in runs or cur["tokens_per_s"] > runs["upstream"]["tokens_per_s"]:
            runs["upstream"] = cur
        upstream_final = final
        if rep + 1 < args.repeats:
            continue
        for name, path in (("ours", out / "ours"), ("upstream", upstream_final)):
            speculators(
                "eval",
                "--verifier",
                st.verifier,
                "--draft",
                path,
                "--data",
                prepared,
                "--num-speculative-tokens",
                4,
                "--max-samples",
                args.eval_samples,
                "--max-new-tokens",
                96,
                "--summary-path",
                out / f"eval-{name}.json",
                threads=t,
            )
            runs[name]["mean_accept_len_k4"] = summary_of(out / f"eval-{name}.json")["mean_accept_len"]
    record = {
        "benchmark": "train_speed",
        "device": "cpu",
        "threads": t,
        "config": {
            "epochs": args.epochs,
            "total_seq_len": args.total_seq_len,
            "draft_vocab_size": args.draft_vocab_size,
            "ttt_steps": 3,
            "optimizer": "adamw",
            "attn": args.attn_impl,
            "upstream_loss": "eager",
            "train_samples": meta["train"]["samples"],
        },
        "ours": runs["ours"],
        "upstream": runs["upstream"],
        "tokens_per_s_ratio": round(runs["ours"]["tokens_per_s"] / runs["upstream"]["tokens_per_s"], 3),
        "peak_rss_ratio": round(runs["ours"]["peak_rss_mb"] / runs["upstream"]["peak_rss_mb"], 3),
        "goal": "tokens/s >= 1.2x upstream at equal or better acceptance, no more memory",
    }
    print(json.dumps(record, separators=(",", ":")))


if __name__ == "__main__":
    main()
