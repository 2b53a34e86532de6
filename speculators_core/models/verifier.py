"""What a draft borrows from its verifier: its config, embeddings, final norm and lm_head.

    read_verifier_config(ref) -> dict              the text config (multimodal `text_config` unwrapped)
    load_verifier_tensors(ref, roles) -> dict      {"embed", "lm_head", "norm"} tensors, read shard by shard
    VerifierHead                                   the verifier's logits restricted to the draft vocabulary

Only the needed tensors (and shards) are read, never the whole verifier.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speculators_core.format.errors import CheckpointError
from speculators_core.format.safetensors_header import INDEX_NAME, read_header
from speculators_core.models.hub import fetch_file, read_json
from speculators_core.models.weights import BIN_INDEX_NAME, BIN_NAME, WEIGHTS_NAME, load_bin, load_safetensors

ROLE_CANDIDATES: dict[str, tuple[str, ...]] = {
    "embed": (
        "model.embed_tokens.weight",
        "embed_tokens.weight",
        "model.language_model.embed_tokens.weight",
        "language_model.model.embed_tokens.weight",
    ),
    "lm_head": ("lm_head.weight", "language_model.lm_head.weight", "model.lm_head.weight"),
    "norm": (
        "model.norm.weight",
        "norm.weight",
        "model.language_model.norm.weight",
        "language_model.model.norm.weight",
    ),
}
_ROLE_SUFFIX = {"embed": "embed_tokens.weight", "lm_head": "lm_head.weight", "norm": "norm.weight"}

# Verifier families whose final norm computes x_normed * (1 + w) (upstream's list).
GEMMA_STYLE_NORM = frozenset(
    {"gemma", "gemma2", "gemma3", "gemma3_text", "qwen3_5", "qwen3_5_text", "recurrent_gemma"}
)


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language-model part of a verifier config (`text_config` for multimodal models)."""
    inner = config.get("text_config")
    return inner if isinstance(inner, dict) and "hidden_size" in inner else config


def read_verifier_config(ref: str | os.PathLike[str], *, revision: str | None = None) -> dict[str, Any]:
    """The verifier's text config; CheckpointError if it lacks vocab_size/hidden_size/num_hidden_layers."""
    full = read_json(ref, "config.json", revision=revision)
    config = dict(text_config(full))
    config.setdefault("architectures", full.get("architectures") or [])
    for key in ("vocab_size", "hidden_size", "num_hidden_layers"):
        if not isinstance(config.get(key), int):
            raise CheckpointError(
                f"{ref}/config.json: verifier config has no integer {key}; is this a causal LM?"
            )
    return config


def _resolve_names(available: Iterable[str], roles: Iterable[str]) -> dict[str, str]:
    names = list(available)
    found: dict[str, str] = {}
    for role in roles:
        for cand in ROLE_CANDIDATES[role]:
            if cand in names:
                found[role] = cand
                break
        else:
            suffix = _ROLE_SUFFIX[role]
            matches = [n for n in names if n.endswith(suffix) and ".layers." not in n and "mtp" not in n]
            if len(matches) == 1:
                found[role] = matches[0]
    return found


def _weight_map(ref: str | os.PathLike[str], revision: str | None) -> tuple[dict[str, str], str]:
    """tensor name -> file name, and the kind ("safetensors" | "bin")."""
    for index_name, kind in ((INDEX_NAME, "safetensors"), (BIN_INDEX_NAME, "bin")):
        index = fetch_file(ref, index_name, revision=revision)
        if index is not None:
            from speculators_core.models.weights import _read_index

            return _read_index(index), kind
    single = fetch_file(ref, WEIGHTS_NAME, revision=revision)
    if single is not None:
        return dict.fromkeys(read_header(single), WEIGHTS_NAME), "safetensors"
    single = fetch_file(ref, BIN_NAME, revision=revision)
    if single is not None:
        return dict.fromkeys(load_bin(single), BIN_NAME), "bin"
    raise CheckpointError(f"{ref}: verifier has no weights ({WEIGHTS_NAME}, {INDEX_NAME}, {BIN_NAME})")


def load_verifier_tensors(
    ref: str | os.PathLike[str], roles: Iterable[str], *, revision: str | None = None
) -> dict[str, torch.Tensor]:
    """The requested roles' tensors. A missing lm_head falls back to the embeddings (tied weights).

    Raises CheckpointError when a role cannot be found.
    """
    roles = list(roles)
    weight_map, kind = _weight_map(ref, revision)
    wanted = [r for r in roles if r != "lm_head"] + (["lm_head", "embed"] if "lm_head" in roles else [])
    names = _resolve_names(weight_map, dict.fromkeys(wanted))
    by_file: dict[str, set[str]] = {}
    for name in names.values():
        by_file.setdefault(weight_map[name], set()).add(name)
    tensors: dict[str, torch.Tensor] = {}
    for filename, file_names in by_file.items():
        path = fetch_file(ref, filename, revision=revision)
        if path is None:
            raise CheckpointError(f"{ref}: shard {filename} listed in the index is missing")
        data = load_safetensors(path, file_names) if kind == "safetensors" else load_bin(path)
        tensors.update({k: v for k, v in data.items() if k in file_names})
    out: dict[str, torch.Tensor] = {}
    for role in roles:
        name = names.get(role)
        if name is None and role == "lm_head" and "embed" in names:
            name = names["embed"]  # tied embeddings
        if name is None:
            raise CheckpointError(
                f"{ref}: verifier weights have no {_ROLE_SUFFIX[role]} (looked for "
                f"{', '.join(ROLE_CANDIDATES[role])})"
            )
        out[role] = tensors[name]
    return out


class VerifierHead(nn.Module):
    """Verifier logits over the draft vocabulary only: lm_head_rows @ norm(last_hidden).

    Training targets need the verifier's distribution restricted to the draft vocabulary; keeping only the
    `t2d` rows of lm_head avoids materializing [B, T, V_verifier] logits. Frozen (no gradients).
    """

    def __init__(
        self,
        norm_weight: torch.Tensor,
        lm_head_weight: torch.Tensor,
        *,
        eps: float,
        t2d: torch.Tensor | None = None,
        gemma_style_norm: bool = False,
    ) -> None:
        super().__init__()
        if t2d is not None:
            if t2d.shape[0] != lm_head_weight.shape[0]:
                raise CheckpointError(
                    f"t2d has {t2d.shape[0]} entries but the verifier lm_head has {lm_head_weight.shape[0]} "
                    "rows"
                )
            lm_head_weight = lm_head_weight[t2d.bool()]
        self.register_buffer("norm_weight", norm_weight.detach().clone(), persistent=False)
        self.register_buffer("lm_head_weight", lm_head_weight.detach().clone(), persistent=False)
        self.eps = eps
        self.gemma_style_norm = gemma_style_norm

    @torch.no_grad()
    def normalize(self, last_hidden_states: torch.Tensor) -> torch.Tensor:
        """The verifier's final norm: what its lm_head reads, and the feature EAGLE-1/HASS drafts get."""
        dtype = last_hidden_states.dtype
        x = last_hidden_states.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        weight = self.norm_weight.to(torch.float32)
        x = x * (1.0 + weight) if self.gemma_style_norm else weight.to(dtype) * x.to(dtype)
        return x.to(dtype)

    @torch.no_grad()
    def forward(self, last_hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.normalize(last_hidden_states)
        return torch.nn.functional.linear(x, self.lm_head_weight.to(x.dtype))

    @classmethod
    def from_verifier(
        cls, ref: str | os.PathLike[str], *, t2d: torch.Tensor | None = None, revision: str | None = None
    ) -> VerifierHead:
        config = read_verifier_config(ref, revision=revision)
        tensors = load_verifier_tensors(ref, ["norm", "lm_head"], revision=revision)
        return cls.from_tensors(config, tensors, t2d=t2d)

    @classmethod
    def from_tensors(
        cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], *, t2d: torch.Tensor | None = None
    ) -> VerifierHead:
        """From the verifier's config and its already loaded `norm` and `lm_head` tensors."""
        return cls(
            tensors["norm"],
            tensors["lm_head"],
            eps=float(config.get("rms_norm_eps", 1e-6)),
            t2d=t2d,
            gemma_style_norm=str(config.get("model_type", "")) in GEMMA_STYLE_NORM,
        )


def local_path(ref: str | os.PathLike[str]) -> Path | None:
    p = Path(ref)
    return p if p.exists() else None
