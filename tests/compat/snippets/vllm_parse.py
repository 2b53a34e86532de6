"""Run vLLM 0.33.0's speculators parser on checkpoint directories.

stdin: {"dirs": [path, ...], "override_models": [name_or_dir, ...]}
stdout: {"parsed": {path: {...} | {"error": ...}}, "override": {name: {...} | {"error": ...}}}
"""

import json
import sys

from vllm.transformers_utils.config import maybe_override_with_speculators
from vllm.transformers_utils.configs.speculators.base import SpeculatorsConfig


def parse(path: str) -> dict:
    out: dict = {}
    try:
        config_dict, _ = SpeculatorsConfig.get_config_dict(path)
        out["speculative"] = SpeculatorsConfig.extract_vllm_speculative_config(config_dict)
        pre = SpeculatorsConfig.extract_transformers_pre_trained_config(config_dict)
        keys = (
            "architectures",
            "draft_vocab_size",
            "target_hidden_size",
            "norm_before_residual",
            "norm_before_fc",
            "fc_norm",
            "norm_output",
            "eagle_aux_hidden_state_layer_ids",
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "model_type",
            "dflash_config",
        )
        out["pretrained"] = {k: pre.get(k) for k in keys}
        config = SpeculatorsConfig.from_pretrained(path)
        out["config_class"] = type(config).__name__
        out["config_architectures"] = list(getattr(config, "architectures", None) or [])
    except Exception as exc:  # report, the test decides
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def override(model: str) -> dict:
    try:
        resolved, tokenizer, spec = maybe_override_with_speculators(model, None, trust_remote_code=False)
        return {"model": resolved, "tokenizer": tokenizer, "speculative": spec}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


payload = json.load(sys.stdin)
result = {
    "parsed": {p: parse(p) for p in payload.get("dirs", [])},
    "override": {m: override(m) for m in payload.get("override_models", [])},
}
print(json.dumps(result))
