"""Offline speculative decoding: verifier (transformers, KV cache) + draft, greedy or sampled verification.

Per prompt: prefill the verifier, take its greedy token; then repeat: the draft proposes k tokens from
the verifier's aux hidden states, the verifier scores [last token, d_1..d_k] in one cached forward, the
longest prefix of drafts equal to the verifier's greedy choices is accepted plus one bonus token, and
the cache is cropped to the accepted tokens. The output equals the verifier's own greedy decoding (the
draft only changes how many tokens each verifier pass yields).

With `temperature` > 0 verification is vLLM 0.33's rejection sampling for drafts proposed greedily (its
default `draft_sample_method: greedy`, no draft probabilities): draft d_i is accepted when u_i <= p_T(d_i)
(p_T the verifier's softmax at the temperature), the first rejected position emits a token drawn from p_T
with d_i removed, and a fully accepted draft adds a bonus token drawn from p_T. Every emitted token is then
distributed as the verifier's own sampling (speculative sampling is lossless); the acceptance at position
i is p_T of the draft's argmax, which is what a draft served by vLLM at that temperature gets.

Counts follow vLLM's spec-decode metrics: per verification step one draft of k tokens, `a` accepted;
mean acceptance length = 1 + accepted / drafts; per-position rate i = (steps with a > i) / drafts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from speculators_core.data.features import VerifierFeatures


@dataclass
class AcceptanceStats:
    k: int
    drafts: int = 0
    accepted: int = 0
    per_pos: list[int] = field(default_factory=list)
    samples: int = 0
    generated: int = 0

    def __post_init__(self) -> None:
        if not self.per_pos:
            self.per_pos = [0] * self.k

    def record(self, a: int) -> None:
        self.drafts += 1
        self.accepted += a
        for i in range(a):
            self.per_pos[i] += 1

    @property
    def mean_accept_len(self) -> float:
        return 1.0 + self.accepted / self.drafts if self.drafts else 1.0

    def mean_accept_len_at(self, k: int) -> float:
        """Mean acceptance length had only the first k drafts been proposed (drafts are a chain)."""
        return 1.0 + sum(self.per_pos[:k]) / self.drafts if self.drafts else 1.0

    @property
    def per_pos_rates(self) -> list[float]:
        return [c / self.drafts if self.drafts else 0.0 for c in self.per_pos]

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / (self.drafts * self.k) if self.drafts else 0.0


def verify_sampled(probs: torch.Tensor, drafts: Sequence[int], generator: torch.Generator) -> tuple[int, int]:
    """Rejection sampling of greedy drafts (vLLM's NO_DRAFT_PROBS path): probs [k+1, V] is p_T at
    [last, d_1..d_k]. Returns (accepted drafts a, the token emitted after them)."""
    uniform = torch.rand(len(drafts), generator=generator)
    for i, d in enumerate(drafts):
        if float(probs[i, d]) >= float(uniform[i]):
            continue
        residual = probs[i].clone()
        residual[d] = 0.0  # max(p - q, 0) with q one-hot at d
        return i, int(torch.multinomial(residual, 1, generator=generator))
    return len(drafts), int(torch.multinomial(probs[len(drafts)], 1, generator=generator))


class SpecDecoder:
    def __init__(
        self,
        verifier: Any,
        draft: Any,
        features: VerifierFeatures,
        *,
        k: int,
        eos_ids: Sequence[int] = (),
        temperature: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.verifier = verifier
        self.draft = draft
        self.features = features
        self.k = k
        self.eos = set(int(e) for e in eos_ids)
        self.device = features.device
        self.draft_dtype = next(draft.parameters()).dtype
        self.temperature = temperature
        self.generator = torch.Generator().manual_seed(seed)  # CPU draws: the same on any device

    @torch.no_grad()
    def _verify(self, ids: list[int], cache: Any, collect: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(the verifier's logits [len(ids), V], the aux states)."""
        out = self.verifier(
            input_ids=torch.tensor([ids], device=self.device), past_key_values=cache, use_cache=True
        )
        aux, _ = collect()
        return out.logits[0], aux[0]

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        """p_T on the CPU, where the seeded generator draws."""
        return torch.softmax(logits.float() / self.temperature, -1).cpu()

    def _first(self, logits: torch.Tensor) -> int:
        if self.temperature <= 0:
            return int(logits.argmax())
        return int(torch.multinomial(self._probs(logits), 1, generator=self.generator))

    def _accept(self, logits: torch.Tensor, drafts: list[int]) -> tuple[int, int]:
        """(accepted drafts, the verifier's token after them) for logits at [last, d_1..d_k]."""
        if self.temperature > 0:
            return verify_sampled(self._probs(logits), drafts, self.generator)
        greedy = logits.argmax(-1).tolist()
        a = 0
        while a < len(drafts) and drafts[a] == greedy[a]:
            a += 1
        return a, greedy[a]

    @torch.no_grad()
    def generate(
        self, prompt: Sequence[int], max_new_tokens: int, stats: AcceptanceStats | None = None
    ) -> list[int]:
        """Continuation of `prompt` (greedy, or sampled at the temperature; up to max_new_tokens, stops after
        EOS); fills `stats`."""
        from transformers import DynamicCache

        cache = DynamicCache()
        with self.features.capturing() as collect:
            logits, aux = self._verify(list(prompt), cache, collect)
            tokens = [*prompt, self._first(logits[-1])]  # x_{n+1}: not yet in the cache
            states = [aux]  # g_0..g_n, concatenated lazily
            out = [tokens[-1]]
            while len(out) < max_new_tokens and tokens[-1] not in self.eos:
                hidden = torch.cat(states)[None].to(self.draft_dtype)
                ids = torch.tensor([tokens[1:]], device=self.device)
                drafts = self.draft.propose(ids, hidden, self.k).token_ids[0].tolist()
                logits, aux = self._verify([tokens[-1], *drafts], cache, collect)
                a, after = self._accept(logits, drafts)
                if stats is not None:
                    stats.record(a)
                new = [*drafts[:a], after]
                if a < self.k:  # drop the rejected drafts from the cache
                    cache.crop(-(self.k - a))
                states.append(aux[: a + 1])
                for t in new:
                    tokens.append(t)
                    out.append(t)
                    if t in self.eos or len(out) >= max_new_tokens:
                        break
                if any(t in self.eos for t in new):
                    break
        if stats is not None:
            stats.samples += 1
            stats.generated += len(out)
        return out


def evaluate(
    decoder: SpecDecoder,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    on_progress: Any = None,
    *,
    report_k: int | None = None,
) -> AcceptanceStats:
    """Decode every prompt; progress reports the acceptance length at `report_k` (default: decoder.k)."""
    stats = AcceptanceStats(decoder.k)
    for p in prompts:
        decoder.generate(p, max_new_tokens, stats)
        if on_progress is not None:
            on_progress(1, {"mean_accept_len": round(stats.mean_accept_len_at(report_k or decoder.k), 3)})
    return stats
