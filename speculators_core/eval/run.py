"""`speculators eval` as a function: load verifier + draft (ours or upstream speculators'), decode, score.

Decoding proposes `max_k` (M >= k) drafts per step. Drafts are a chain, so the first j drafts of an
M-draft proposal are the j-draft proposal and one run gives the acceptance at every j <= M (cost.py); the
summary's historical keys are read at k, the `*_by_k` / `*_all` keys cover 1..M.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from speculators_core.data.errors import IncompatibleDataError, InputError
from speculators_core.data.features import VerifierFeatures, load_verifier
from speculators_core.eval.cost import (
    acceptance_length_by_k,
    conditional_rates,
    expected_speedup,
    per_token_flops_draft,
    per_token_flops_verifier,
    speedup_by_k,
)
from speculators_core.eval.prompts import load_prompts, prompts_digest, resolve_prompts
from speculators_core.eval.simulate import AcceptanceStats, SpecDecoder, evaluate


@dataclass
class EvalConfig:
    verifier: str
    draft: str
    data: str
    k: int | None = None
    max_k: int | None = None  # drafts proposed per step (>= k); None: k
    max_samples: int | None = 64
    max_new_tokens: int = 128
    split: str = "heldout"
    draft_cost_ratio: float | None = None
    device: str | None = None
    revision: str | None = None
    prompt_set: str | None = None  # JSONL prompt set: read if it exists, else built from `data` and written
    temperature: float = 0.0  # 0: greedy verification; > 0: vLLM's rejection sampling of greedy drafts
    seed: int = 0  # the sampling's draws (temperature > 0)


def speculative_tokens(k: int | None, max_k: int | None, default_k: int) -> tuple[int, int]:
    """(k, M) from the flags and the draft's configured k; usage errors name the flag."""
    k = int(k or default_k)
    if k < 1:
        raise InputError(f"--num-speculative-tokens must be >= 1, got {k}")
    m = k if max_k is None else int(max_k)
    if m < k:
        raise InputError(
            f"--max-speculative-tokens {m} is below k={k} (--num-speculative-tokens or the draft's "
            f"speculative_tokens); give at least {k}, or omit it to decode at k"
        )
    return k, m


def summarize(
    stats: AcceptanceStats,
    k: int,
    ratio: float,
    *,
    draft: str,
    prompts: list[list[int]],
    created: bool,
    parallel: bool = False,
) -> dict[str, Any]:
    """The eval summary: the historical keys at k, plus acceptance and speed-up at every k' <= M."""
    rates = stats.per_pos_rates  # M = stats.k positions
    lengths = acceptance_length_by_k(rates)
    accept_len = lengths[k - 1]

    def r4(values: list[float]) -> list[float]:
        return [round(v, 4) for v in values]

    return {
        "step": "eval",
        "k": k,
        "mean_accept_len": round(accept_len, 4),
        "per_pos": r4(rates[:k]),
        "acceptance_rate": round(sum(rates[:k]) / k, 4),
        "speedup": round(expected_speedup(accept_len, k, ratio, parallel=parallel), 4),
        "draft_cost_ratio": round(ratio, 5),
        "samples": stats.samples,
        "drafts": stats.drafts,  # verification steps, each proposing max_k drafts
        "generated_tokens": stats.generated,
        "draft": draft,
        "max_k": stats.k,
        "per_pos_all": r4(rates),
        "cond_per_pos": r4(conditional_rates(rates)),
        "accept_len_by_k": r4(lengths),
        "speedup_by_k": r4(speedup_by_k(rates, ratio, parallel=parallel)),
        "parallel_drafting": parallel,  # one draft pass per step (DFlash) instead of k
        # Always present, so any two evaluations can be checked for having used the same prompts.
        "prompt_set": {"sha256": prompts_digest(prompts), "prompts": len(prompts), "created": created},
    }


def run_eval(cfg: EvalConfig, *, verifier_model: Any = None, on_progress: Any = None) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from speculators_core.models import load_draft_model
    from speculators_core.models.verifier import read_verifier_config

    if cfg.max_samples is not None and cfg.max_samples < 1:
        raise InputError(f"--max-samples must be >= 1, got {cfg.max_samples}")
    if not 0.0 <= cfg.temperature <= 10.0:
        raise InputError(f"--temperature must be in [0, 10] (0: greedy), got {cfg.temperature}")
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    # Draft, flags and prompts before the verifier's weights: usage errors fail before the expensive load.
    draft = load_draft_model(cfg.draft, verifier=cfg.verifier, dtype=dtype, device=device).eval()
    dc = draft.config
    vc = read_verifier_config(cfg.verifier, revision=cfg.revision)
    vocab_size = int(vc["vocab_size"])
    if dc.transformer_layer_config.vocab_size != vocab_size:
        raise IncompatibleDataError(
            f"{cfg.draft} was trained for a vocabulary of {dc.transformer_layer_config.vocab_size}, "
            f"the verifier {cfg.verifier} has {vocab_size}"
        )
    k, max_k = speculative_tokens(cfg.k, cfg.max_k, dc.speculative_tokens)
    block_limit = getattr(dc, "max_speculative_tokens", None)  # DFlash: what one block drafts
    if block_limit is not None and max_k > block_limit:
        raise InputError(
            f"k={max_k}: a block of {dc.block_size} drafts at most {block_limit} tokens; lower "
            "--num-speculative-tokens / --max-speculative-tokens"
        )
    tok = AutoTokenizer.from_pretrained(cfg.verifier, revision=cfg.revision)
    prompts, created = resolve_prompts(
        cfg.prompt_set,
        vocab_size,
        lambda: load_prompts(cfg.data, tok, split=cfg.split, max_samples=cfg.max_samples),
        cfg.max_samples,
    )
    model = verifier_model or load_verifier(cfg.verifier, revision=cfg.revision, device=device, dtype=dtype)
    layer_ids = getattr(dc, "eagle_aux_hidden_state_layer_ids", None) or getattr(
        dc, "aux_hidden_state_layer_ids", None
    )
    # EAGLE-3 and DFlash drafts read aux layers (indices of hidden_states, captured at the input of layer
    # i); EAGLE-1/HASS drafts the verifier's normed last state (as in vLLM).
    features = VerifierFeatures(model, layer_ids, normed_last=dc.speculators_model_type == "eagle")
    eos = [t for t in {tok.eos_token_id, *(_generation_eos(model))} if t is not None]
    decoder = SpecDecoder(
        model, draft, features, k=max_k, eos_ids=eos, temperature=cfg.temperature, seed=cfg.seed
    )
    stats = evaluate(decoder, prompts, cfg.max_new_tokens, on_progress=on_progress, report_k=k)
    ratio = cfg.draft_cost_ratio
    if ratio is None:
        ratio = per_token_flops_draft(draft) / per_token_flops_verifier(vc)
    parallel = block_limit is not None
    summary = summarize(stats, k, ratio, draft=cfg.draft, prompts=prompts, created=created, parallel=parallel)
    return {**summary, "temperature": cfg.temperature}


def _generation_eos(model: Any) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in eos] if isinstance(eos, list) else [int(eos)]
