"""Run upstream speculators 0.9.0's own trainer (its CLI's `main`) on CPU, timed (.venv-compat's python).

Upstream's trainer assumes an accelerator; the minimal changes to run it on CPU (nothing else is touched):
  * the device is "cpu" instead of the local rank index (`get_local_rank`),
  * `torch.accelerator.synchronize` is a no-op when there is no accelerator (its step timer calls it),
  * the command line selects its eager loss and sdpa attention (no Triton, no flex-attention on CPU).
Measured: wall time of the training epochs only (validation and checkpoint saving excluded) and the real
(non-padding) tokens the draft's forward saw, from `document_ids`.

Usage: python benchmarks/upstream_train.py <upstream train flags...>; prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def main(argv: list[str]) -> None:
    import torch

    if not torch.accelerator.is_available():
        torch.accelerator.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    import speculators.train.distributed as dist_mod
    import speculators.train.trainer as trainer_mod

    dist_mod.get_local_rank = lambda: "cpu"  # type: ignore[assignment]
    trainer_mod.get_local_rank = lambda: "cpu"  # type: ignore[assignment]

    from speculators.models.dflash.core import DFlashDraftModel
    from speculators.models.eagle3.core import Eagle3DraftModel

    counters = {"tokens": 0, "train_seconds": 0.0, "steps": 0}

    def counting(original):  # type: ignore[no-untyped-def]
        def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if self.training:
                counters["tokens"] += int((kwargs["document_ids"] != -1).sum())
                counters["steps"] += 1
            return original(self, *args, **kwargs)

        return forward

    for cls in (Eagle3DraftModel, DFlashDraftModel):
        cls.forward = counting(cls.forward)  # type: ignore[method-assign]
    original_epoch = trainer_mod.Trainer.train_epoch

    def timed_epoch(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return original_epoch(self, *args, **kwargs)
        finally:
            counters["train_seconds"] += time.perf_counter() - t0

    trainer_mod.Trainer.train_epoch = timed_epoch  # type: ignore[method-assign]

    from speculators.train.cli import main as train_main
    from speculators.train.config import TrainConfig

    train_main(TrainConfig.resolve(argv))
    result = {
        **counters,
        "tokens_per_s": counters["tokens"] / max(counters["train_seconds"], 1e-9),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print("UPSTREAM_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
