"""`speculators eval` as a function: load verifier + draft (ours or upstream speculators'), decode, score."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from speculators_core.data.errors import IncompatibleDataError
from speculators_core.data.features import VerifierFeatures, load_verifier
from speculators_core.eval.cost import expected_speedup, per_token_flops_draft, per_token_flops_verifier
from speculators_core.eval.prompts import load_prompts
from speculators_core.eval.simulate import SpecDecoder, evaluate


@dataclass
class EvalConfig:
    verifier: str
    draft: str
    data: str
    k: int | None = None
    max_samples: int | None = 64
    max_new_tokens: int = 128
    split: str = "heldout"
    draft_cost_ratio: float | None = None
    device: str | None = None
    revision: str | None = None


def run_eval(cfg: EvalConfig, *, verifier_model: Any = None, on_progress: Any = None) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from speculators_core.models import load_draft_model
    from speculators_core.models.verifier import read_verifier_config

    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = verifier_model or load_verifier(cfg.verifier, revision=cfg.revision, device=device, dtype=dtype)
    draft = load_draft_model(cfg.draft, verifier=cfg.verifier, dtype=dtype, device=device).eval()
    dc = draft.config
    vc = read_verifier_config(cfg.verifier, revision=cfg.revision)
    if dc.transformer_layer_config.vocab_size != int(vc["vocab_size"]):
        raise IncompatibleDataError(
            f"{cfg.draft} was trained for a vocabulary of {dc.transformer_layer_config.vocab_size}, "
            f"the verifier {cfg.verifier} has {vc['vocab_size']}"
        )
    layer_ids = getattr(dc, "eagle_aux_hidden_state_layer_ids", None)
    # EAGLE-3 drafts read aux layers; EAGLE-1/HASS drafts the verifier's normed last state (as in vLLM).
    features = VerifierFeatures(model, layer_ids, normed_last=dc.speculators_model_type == "eagle")
    k = int(cfg.k or dc.speculative_tokens)
    tok = AutoTokenizer.from_pretrained(cfg.verifier, revision=cfg.revision)
    prompts = load_prompts(cfg.data, tok, split=cfg.split, max_samples=cfg.max_samples)
    eos = [t for t in {tok.eos_token_id, *(_generation_eos(model))} if t is not None]
    decoder = SpecDecoder(model, draft, features, k=k, eos_ids=eos)
    stats = evaluate(decoder, prompts, cfg.max_new_tokens, on_progress=on_progress)
    ratio = cfg.draft_cost_ratio
    if ratio is None:
        ratio = per_token_flops_draft(draft) / per_token_flops_verifier(vc)
    return {
        "step": "eval",
        "k": k,
        "mean_accept_len": round(stats.mean_accept_len, 4),
        "per_pos": [round(r, 4) for r in stats.per_pos_rates],
        "acceptance_rate": round(stats.acceptance_rate, 4),
        "speedup": round(expected_speedup(stats.mean_accept_len, k, ratio), 4),
        "draft_cost_ratio": round(ratio, 5),
        "samples": stats.samples,
        "drafts": stats.drafts,
        "generated_tokens": stats.generated,
        "draft": cfg.draft,
    }


def _generation_eos(model: Any) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in eos] if isinstance(eos, list) else [int(eos)]
