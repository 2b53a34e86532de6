"""Datagen speed: `speculators datagen` tokens/s against the verifier's bare forward pass on the same tokens
(the physical floor: same batches, no capture, no storage), and the peak memory of each. Prints one JSON line.

    .venv/bin/python benchmarks/datagen_speed.py [--threads 1] [--repeats 2]

Each measurement runs in its own process (peak RSS from wait4); the best of `--repeats` alternating runs
is kept, which filters out noise from other load on the machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time

from _common import WORK, prepare_and_datagen, run, speculators, stack, summary_of


def bare_forward(verifier: str, data: str, batch_tokens: int, full: bool) -> None:
    """Inner mode: the decoder's (or the whole LM's) forward over datagen's batches; prints one JSON line."""
    import torch

    from speculators_core.data.features import length_batches, load_verifier
    from speculators_core.data.store import TokenStore

    model = load_verifier(verifier)
    run_model = model if full else model.get_decoder()
    tokens, seconds = 0, 0.0
    for split in ("train", "heldout"):
        store = TokenStore(f"{data}/{split}")
        samples = [torch.from_numpy(store[i][0]) for i in range(len(store))]
        for batch in length_batches([len(s) for s in samples], batch_tokens):
            width = max(len(samples[i]) for i in batch)
            inp = torch.zeros((len(batch), width), dtype=torch.long)
            att = torch.zeros((len(batch), width), dtype=torch.long)
            for r, i in enumerate(batch):
                inp[r, : len(samples[i])] = samples[i]
                att[r, : len(samples[i])] = 1
            t0 = time.perf_counter()
            with torch.no_grad():
                run_model(
                    input_ids=inp.to(model.device), attention_mask=att.to(model.device), use_cache=False
                )
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            seconds += time.perf_counter() - t0
            tokens += sum(len(samples[i]) for i in batch)
    print(json.dumps({"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-tokens", type=int, default=16384)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--inner", choices=("decoder", "lm"), help=argparse.SUPPRESS)
    ap.add_argument("--verifier", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        bare_forward(args.verifier, args.data, args.batch_tokens, full=args.inner == "lm")
        return
    t = args.threads
    st = stack()
    prepared, _ = prepare_and_datagen(st, max_length=args.max_length, threads=t)
    best: dict[str, dict] = {}

    def keep(name: str, tps: float, rss: float, extra: dict | None = None) -> None:
        if name not in best or tps > best[name]["tokens_per_s"]:
            best[name] = {"tokens_per_s": round(tps, 1), "peak_rss_mb": round(rss, 1), **(extra or {})}

    for _ in range(args.repeats):
        for inner in ("decoder", "lm"):
            r = run(
                [
                    sys.executable,
                    __file__,
                    "--inner",
                    inner,
                    "--verifier",
                    st.verifier,
                    "--data",
                    prepared,
                    "--batch-tokens",
                    args.batch_tokens,
                ],
                threads=t,
            )
            res = json.loads(r.stdout.strip().splitlines()[-1])
            keep(f"bare_{inner}_forward", res["tokens_per_s"], r.peak_rss_mb, {"tokens": res["tokens"]})
        for dtype in ("bfloat16", "float8"):
            out = WORK / f"datagen-speed-{dtype}"
            shutil.rmtree(out, ignore_errors=True)
            r = speculators(
                "datagen",
                "--verifier",
                st.verifier,
                "--data",
                prepared,
                "--output",
                out,
                "--dtype",
                dtype,
                "--batch-tokens",
                args.batch_tokens,
                "--summary-path",
                out.with_suffix(".json"),
                threads=t,
            )
            s = summary_of(out.with_suffix(".json"))
            keep(
                f"datagen_{dtype}",
                s["tokens"] / s["seconds"],
                r.peak_rss_mb,
                {"tokens": s["tokens"], "bytes_per_token": round(s["bytes"] / s["tokens"], 1)},
            )
    floor = best["bare_decoder_forward"]["tokens_per_s"]
    record = {
        "benchmark": "datagen_speed",
        "device": "cpu",
        "threads": t,
        "verifier": {k: st.info["spec"][k] for k in ("num_layers", "hidden_size", "intermediate_size")},
        **best,
        "time_vs_bare_decoder": {
            k: round(floor / v["tokens_per_s"], 3) for k, v in best.items() if k.startswith("datagen")
        },
        "goal": "datagen time < 1.2x the bare forward on the same tokens",
    }
    print(json.dumps(record, separators=(",", ":")))


if __name__ == "__main__":
    main()
