"""vLLM serve commands for a verifier + speculator pair (torch-free: the operator imports it).

Two forms exist in vLLM 0.33:

* long form (always works; the operator always renders it):
      vllm serve VERIFIER --speculative-config '{"model":DRAFT,"method":M,"num_speculative_tokens":K}'
* short form `vllm serve DRAFT`: vLLM reads the verifier from the draft's config.json, but only when
  `verifier.name_or_path` is a remote hub id (passes huggingface_hub's validate_repo_id and is not an
  existing local path); local verifiers are rejected ("Speculators verifier must name a remote model
  repository"). `short_form_applies` decides.

Methods are those of the Speculator resource: eagle3, eagle, peagle, dflash, dspark. `peagle` is served as
eagle3 with `parallel_drafting: true`. Tensor parallelism is a server flag (`--tensor-parallel-size`); it is
never put inside --speculative-config, where vLLM rejects `tensor_parallel_size`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from speculators_core.format.errors import SpeculatorsError


class ServingError(SpeculatorsError):
    """Serve options that vLLM would reject; the message names the option and the fix."""


# Resource method -> (vLLM method, extra --speculative-config keys).
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "eagle3": ("eagle3", {}),
    "eagle": ("eagle", {}),
    "peagle": ("eagle3", {"parallel_drafting": True}),
    "dflash": ("dflash", {}),
    "dspark": ("dspark", {}),
}

# Methods whose draft proposes all its tokens in one forward pass (a DFlash block; P-EAGLE's
# parallel_drafting): a step's drafting cost does not grow with k.
PARALLEL_DRAFTING = frozenset({"dflash", "peagle"})

# Keys of vLLM's SpeculativeConfig that this builder owns or that vLLM refuses.
_OWNED_KEYS = frozenset({"model", "method", "num_speculative_tokens"})

# huggingface_hub.utils.validate_repo_id, restated so the operator needs no huggingface_hub (a test keeps
# the two in agreement).
_REPO_ID = re.compile(r"(\b[\w\-.]{1,96}\b/)?\b[\w\-.]{1,96}\b", re.ASCII)


def is_valid_repo_id(name: object) -> bool:
    """True when huggingface_hub's validate_repo_id would accept `name`."""
    if not isinstance(name, str) or name.count("/") > 1:
        return False
    if not _REPO_ID.fullmatch(name):
        return False
    return not ("--" in name or ".." in name or name.endswith(".git"))


def short_form_applies(verifier_name_or_path: str | None) -> bool:
    """Whether `vllm serve DRAFT` works: the verifier is a remote hub id, not a local path (vLLM's rule)."""
    if not is_valid_repo_id(verifier_name_or_path):
        return False
    assert isinstance(verifier_name_or_path, str)
    return not (os.path.exists(verifier_name_or_path) or os.path.islink(verifier_name_or_path))


def vllm_method(method: str) -> tuple[str, dict[str, Any]]:
    """(vLLM method, extra speculative-config keys) for a resource method; ServingError if unknown."""
    if method not in METHODS:
        raise ServingError(f"method {method!r} is not supported; allowed: {', '.join(METHODS)}")
    name, extra = METHODS[method]
    return name, dict(extra)


def speculative_config(
    draft: str,
    method: str,
    num_speculative_tokens: int,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The --speculative-config object: model, method, num_speculative_tokens (+ `extra` keys).

    `extra` may carry other SpeculativeConfig keys (draft_tensor_parallel_size, attention_backend, ...);
    `tensor_parallel_size` and the three owned keys are refused.
    """
    if not isinstance(num_speculative_tokens, int) or isinstance(num_speculative_tokens, bool):
        raise ServingError(f"num_speculative_tokens must be an integer, got {num_speculative_tokens!r}")
    if num_speculative_tokens < 1:
        raise ServingError(f"num_speculative_tokens must be >= 1, got {num_speculative_tokens}")
    if not draft:
        raise ServingError("draft path is empty; pass the speculator directory or hub id")
    name, method_extra = vllm_method(method)
    config: dict[str, Any] = {
        "model": draft,
        "method": name,
        "num_speculative_tokens": num_speculative_tokens,
    }
    config.update(method_extra)
    for key, value in (extra or {}).items():
        if key == "tensor_parallel_size":
            raise ServingError(
                "tensor_parallel_size is not a --speculative-config key (vLLM rejects it); set the server's "
                "tensor_parallel_size, or draft_tensor_parallel_size (1 or the server's value) for the draft"
            )
        if key in _OWNED_KEYS:
            raise ServingError(
                f"{key} is set from the draft; remove it from the extra speculative-config keys"
            )
        config[key] = value
    return config


def speculative_config_json(config: Mapping[str, Any]) -> str:
    """Compact JSON, as it goes on the command line."""
    return json.dumps(config, separators=(",", ":"))


def _server_options(
    *,
    tensor_parallel_size: int | None,
    max_model_len: int | None,
    gpu_memory_utilization: float | None,
    port: int | None,
    host: str | None,
    served_model_name: str | None,
    extra_args: Sequence[str],
) -> list[str]:
    argv: list[str] = []
    if tensor_parallel_size is not None:
        if tensor_parallel_size < 1:
            raise ServingError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
        argv += ["--tensor-parallel-size", str(tensor_parallel_size)]
    if max_model_len is not None:
        if max_model_len < 1:
            raise ServingError(f"max_model_len must be >= 1, got {max_model_len}")
        argv += ["--max-model-len", str(max_model_len)]
    if gpu_memory_utilization is not None:
        if not 0 < gpu_memory_utilization <= 1:
            raise ServingError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        argv += ["--gpu-memory-utilization", repr(float(gpu_memory_utilization))]
    if host is not None:
        argv += ["--host", host]
    if port is not None:
        if not 1 <= port <= 65535:
            raise ServingError(f"port must be in 1..65535, got {port}")
        argv += ["--port", str(port)]
    if served_model_name is not None:
        argv += ["--served-model-name", served_model_name]
    for arg in extra_args:
        flag = arg.split("=", 1)[0]
        if flag in ("--speculative-config", "-sc", "--speculative_config"):
            raise ServingError(
                f"extra argument {arg!r} conflicts with the generated --speculative-config; "
                "pass its keys as speculative-config extras instead"
            )
    argv += list(extra_args)
    return argv


def build_serve_argv(
    verifier: str,
    draft: str,
    method: str,
    num_speculative_tokens: int,
    *,
    tensor_parallel_size: int | None = None,
    max_model_len: int | None = None,
    gpu_memory_utilization: float | None = None,
    port: int | None = None,
    host: str | None = None,
    served_model_name: str | None = None,
    speculative_extra: Mapping[str, Any] | None = None,
    extra_args: Sequence[str] = (),
    executable: Sequence[str] = ("vllm", "serve"),
) -> list[str]:
    """Long form argv: `vllm serve VERIFIER --speculative-config JSON [server options] [extra_args]`."""
    if not verifier:
        raise ServingError("verifier path is empty; pass the verifier directory or hub id")
    config = speculative_config(draft, method, num_speculative_tokens, speculative_extra)
    argv = [*executable, verifier, "--speculative-config", speculative_config_json(config)]
    return argv + _server_options(
        tensor_parallel_size=tensor_parallel_size,
        max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization,
        port=port,
        host=host,
        served_model_name=served_model_name,
        extra_args=extra_args,
    )


def build_short_serve_argv(
    draft: str,
    *,
    num_speculative_tokens: int | None = None,
    tensor_parallel_size: int | None = None,
    max_model_len: int | None = None,
    gpu_memory_utilization: float | None = None,
    port: int | None = None,
    host: str | None = None,
    served_model_name: str | None = None,
    extra_args: Sequence[str] = (),
    executable: Sequence[str] = ("vllm", "serve"),
) -> list[str]:
    """Short form argv `vllm serve DRAFT`; only valid when `short_form_applies(verifier)`.

    `num_speculative_tokens` overrides the draft's k (vLLM merges a user --speculative-config over it).
    """
    if not draft:
        raise ServingError("draft path is empty; pass the speculator directory or hub id")
    argv = [*executable, draft]
    if num_speculative_tokens is not None:
        if num_speculative_tokens < 1:
            raise ServingError(f"num_speculative_tokens must be >= 1, got {num_speculative_tokens}")
        argv += [
            "--speculative-config",
            speculative_config_json({"num_speculative_tokens": num_speculative_tokens}),
        ]
    return argv + _server_options(
        tensor_parallel_size=tensor_parallel_size,
        max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization,
        port=port,
        host=host,
        served_model_name=served_model_name,
        extra_args=extra_args,
    )


def build_serve_argv_for(
    verifier_name_or_path: str | None,
    draft: str,
    method: str,
    num_speculative_tokens: int,
    **options: Any,
) -> list[str]:
    """The shortest command that works: short form for a remote hub verifier, long form otherwise."""
    if short_form_applies(verifier_name_or_path):
        return build_short_serve_argv(draft, **options)
    if not verifier_name_or_path:
        raise ServingError(
            "the draft's config.json has no verifier.name_or_path; pass the verifier explicitly (long form)"
        )
    return build_serve_argv(verifier_name_or_path, draft, method, num_speculative_tokens, **options)


def format_command(argv: Sequence[str]) -> str:
    """A shell-quoted command line (the JSON lands in single quotes)."""
    return shlex.join(argv)
