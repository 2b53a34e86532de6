"""Which `vllm serve` arguments a Speculator's vllm.extraArgs may not hold, checked the way vLLM parses them.

vLLM's FlexibleArgumentParser (vllm/utils/argparse_utils.py, 0.33) turns '_' into '-' in a long option's
name (up to its first '.'), accepts `--flag=value`, dotted sub-keys of JSON options
(`--speculative-config.num_speculative_tokens 5`), and argparse accepts any unambiguous prefix of a long
option (`--tensor-parallel 4`). So a flag is normalised before it is compared, and an item that is a
prefix of a managed flag is refused too. The API server applies the CEL rules built here; `problem` is the
same check in Python (unit tests compare the two on a corpus; the compat tier checks the spellings against
vLLM's own parser).
"""

from __future__ import annotations

# Rendered by the operator from the Speculator's own fields: field to use instead.
MANAGED_LONG = {
    "--speculative-config": "method, numSpeculativeTokens, tuning",
    "--spec-method": "method",
    "--spec-model": "draft",
    "--spec-tokens": "numSpeculativeTokens or tuning",
    "--port": "vllm.port",
    "--host": "(the operator listens on all interfaces)",
    "--tensor-parallel-size": "vllm.tensorParallelSize",
    "--max-model-len": "vllm.maxModelLen",
    "--gpu-memory-utilization": "vllm.gpuMemoryUtilization",
    "--served-model-name": "vllm.servedModelName",
    "--model": "verifier",
    # Spellings of older vLLM releases: 0.33 refuses them at start-up (a crash loop), and each one would
    # contradict the rendered --speculative-config anyway.
    "--speculative-model": "draft",
    "--num-speculative-tokens": "numSpeculativeTokens or tuning",
    "--speculative-draft-tensor-parallel-size": "(the draft's tensor parallelism follows the verifier's)",
    "--speculative-max-model-len": "vllm.maxModelLen",
    "--speculative-disable-by-batch-size": "tuning.loadBuckets",
}
MANAGED_SHORT = ("-sc", "-tp")


def _cel_list(items: list[str] | tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{i}'" for i in items) + "]"


# CEL: the item's flag name as vLLM reads it ('_' as '-'; the part before '='). No cel.bind in the CRD
# validation environment, so the expression is spelled out where it is used.
_N = "a.split('=')[0].replace('_', '-')"
_MANAGED_BODY = (
    f"{_cel_list(list(MANAGED_SHORT))}.exists(s, {_N}.startsWith(s)) || "
    f"{_cel_list(list(MANAGED_LONG))}.exists(m, {_N}.size() > 2 && m.startsWith({_N})) || "
    f"{_N}.startsWith('--speculative-config.')"
)
_BAD = f"a.startsWith('-') && !a.contains(' ') && ({_MANAGED_BODY})"
_COMBINED = "a.startsWith('-') && a.contains(' ')"
_FIRST_COMBINED = f"self.filter(a, {_COMBINED})[0]"

RULES = (
    {
        "rule": f"!self.exists(a, {_COMBINED})",
        "messageExpression": (
            f"'extraArgs item \"' + {_FIRST_COMBINED} + '\" holds a flag and its value in one item; "
            f"write them as two items: [\"' + {_FIRST_COMBINED}.split(' ')[0] + '\", \"' + "
            f"{_FIRST_COMBINED}.substring({_FIRST_COMBINED}.indexOf(' ') + 1).trim() + '\"]'"
        ),
        "message": 'an extraArgs item holds a flag and its value; write them as two items, e.g. ["--x", "4"]',
    },
    {
        "rule": f"!self.exists(a, {_BAD})",
        "messageExpression": (
            "'extraArgs item \"' + self.filter(a, " + _BAD + ")[0] + '\" sets a flag the operator renders "
            "(vLLM reads _ as -, --flag=value and unambiguous prefixes alike): use the Speculator\\'s own "
            "fields instead (speculative config: method, numSpeculativeTokens, tuning; --port: vllm.port; "
            "--tensor-parallel-size: vllm.tensorParallelSize; --max-model-len: vllm.maxModelLen; "
            "--gpu-memory-utilization: vllm.gpuMemoryUtilization; --served-model-name: vllm.servedModelName)'"
        ),
        "message": "extraArgs may not set flags the operator renders: use the Speculator's own fields",
    },
)


def cel_rules() -> list[dict[str, str]]:
    return [dict(r) for r in RULES]


def _name(item: str) -> str:
    return item.split("=", 1)[0].replace("_", "-")


def problem(args: list[str]) -> str | None:
    """The first item the rules above refuse, with why; None when every item is fine."""
    for item in args:
        if not item.startswith("-"):
            continue  # a value
        if " " in item:
            return f"{item!r} holds a flag and its value; write them as two items"
        name = _name(item)
        if any(name.startswith(s) for s in MANAGED_SHORT):
            return f"{item!r} sets a flag the operator renders"
        if name.startswith("--speculative-config."):
            return f"{item!r} sets a flag the operator renders"
        for flag, field in MANAGED_LONG.items():
            if len(name) > 2 and flag.startswith(name):
                return f"{item!r} sets {flag}, which the operator renders: use {field}"
    return None


MANAGED_VLLM_FLAGS = (*MANAGED_LONG, *MANAGED_SHORT)
