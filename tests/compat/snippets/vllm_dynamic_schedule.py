"""vLLM 0.33.0's own reading of a batch-size schedule (num_speculative_tokens_per_batch_size).

stdin: {"config": {...--speculative-config...}, "max_batch": N}
stdout: {"ok": bool, "lookup": [k for batch size 1..N] | null, "error": str | null}

SpeculativeConfig's __post_init__ needs a real target model, so it is replaced by a no-op (field validation
still runs); the schedule then goes through the scheduler's own validation and dense lookup.
"""

import json
import sys

from vllm.config import SpeculativeConfig
from vllm.v1.spec_decode.dynamic.utils import build_dynamic_sd_schedule_lookup

SpeculativeConfig.__post_init__ = lambda self: None

payload = json.load(sys.stdin)
try:
    sc = SpeculativeConfig(**payload["config"])
    lookup = build_dynamic_sd_schedule_lookup(
        sc.num_speculative_tokens_per_batch_size, payload["max_batch"], sc.num_speculative_tokens
    )
    print(json.dumps({"ok": True, "lookup": lookup[1:], "error": None}))
except Exception as exc:
    print(json.dumps({"ok": False, "lookup": None, "error": f"{type(exc).__name__}: {exc}"}))
