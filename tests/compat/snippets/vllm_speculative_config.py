"""Validate --speculative-config JSON objects with vLLM 0.33.0's SpeculativeConfig.

SpeculativeConfig's __post_init__ needs the target model's ModelConfig (real weights), so it is replaced by
a no-op: pydantic field validation (unknown keys, types, bounds) and the model validators still run.
Also reports which vLLM config dataclass declares each server flag.

stdin: {"configs": [{...}, ...], "flags": ["tensor_parallel_size", ...]}
stdout: {"results": [{"ok": bool, "method": ..., "num_speculative_tokens": ..., "parallel_drafting": ...,
         "error": ...}], "flags": {flag: "ConfigClass" | null}}
"""

import dataclasses
import json
import sys

from vllm.config import CacheConfig, ModelConfig, ParallelConfig, SchedulerConfig, SpeculativeConfig

SpeculativeConfig.__post_init__ = lambda self: None  # needs a real target model; see docstring


def check(config: dict) -> dict:
    try:
        sc = SpeculativeConfig(**config)
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {
        "ok": True,
        "method": sc.method,
        "model": sc.model,
        "num_speculative_tokens": sc.num_speculative_tokens,
        "parallel_drafting": sc.parallel_drafting,
    }


def owner(flag: str) -> str | None:
    for cls in (ParallelConfig, ModelConfig, CacheConfig, SchedulerConfig):
        if flag in {f.name for f in dataclasses.fields(cls)}:
            return cls.__name__
    return None


payload = json.load(sys.stdin)
print(
    json.dumps(
        {
            "results": [check(c) for c in payload.get("configs", [])],
            "flags": {f: owner(f) for f in payload.get("flags", [])},
        }
    )
)
