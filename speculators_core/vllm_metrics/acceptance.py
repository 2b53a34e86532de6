"""vLLM's spec-decode counters and the acceptance numbers derived from them.

Formulas (vLLM `SpecDecodingProm`): acceptance rate = accepted / draft tokens; mean acceptance length
= 1 + accepted / drafts (the 1 is the verifier's bonus token); per-position rate = accepted at i / drafts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from speculators_core.vllm_metrics.exposition import parse

PREFIX = "vllm:spec_decode_"
DRAFTS = "vllm:spec_decode_num_drafts"
DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens"
ACCEPTED = "vllm:spec_decode_num_accepted_tokens"
PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos"
FAMILIES = (DRAFTS, DRAFT_TOKENS, ACCEPTED, PER_POS)
# vLLM observes this histogram once per request per engine step: its mean is the step time (tuning).
ITL = "vllm:inter_token_latency_seconds"
RUNNING = "vllm:num_requests_running"  # gauge: the running batch size (tuning's load buckets)
DECIMALS = 3


@dataclass(frozen=True)
class Counters:
    """Cumulative counters of one server (summed over engines), as scraped."""

    drafts: float = 0.0
    draft_tokens: float = 0.0
    accepted: float = 0.0
    per_pos: dict[int, float] = field(default_factory=dict)
    # Latest *_created timestamp: changes when the counters were re-created (process restart).
    created: float | None = None
    itl_sum: float = 0.0  # vllm:inter_token_latency_seconds_sum (a counter too)
    itl_count: float = 0.0
    running: float = 0.0  # vllm:num_requests_running: a gauge, carried, never differenced

    def minus(self, base: Counters) -> Counters:
        return Counters(
            self.drafts - base.drafts,
            self.draft_tokens - base.draft_tokens,
            self.accepted - base.accepted,
            {i: v - base.per_pos.get(i, 0.0) for i, v in self.per_pos.items()},
            itl_sum=self.itl_sum - base.itl_sum,
            itl_count=self.itl_count - base.itl_count,
            running=self.running,
        )

    def plus(self, other: Counters) -> Counters:
        positions = set(self.per_pos) | set(other.per_pos)
        return Counters(
            self.drafts + other.drafts,
            self.draft_tokens + other.draft_tokens,
            self.accepted + other.accepted,
            {i: self.per_pos.get(i, 0.0) + other.per_pos.get(i, 0.0) for i in positions},
            itl_sum=self.itl_sum + other.itl_sum,
            itl_count=self.itl_count + other.itl_count,
            running=self.running + other.running,
        )

    def went_backwards(self, previous: Counters) -> bool:
        """A counter decreased: the server restarted between the two scrapes."""
        if self.drafts < previous.drafts or self.draft_tokens < previous.draft_tokens:
            return True
        if self.accepted < previous.accepted or self.itl_count < previous.itl_count:
            return True
        return any(v < previous.per_pos.get(i, 0.0) for i, v in self.per_pos.items())


def _keep(name: str) -> bool:
    return name.startswith(PREFIX) or name.startswith(ITL) or name == RUNNING


def counters_from_text(text: str, model_name: str | None = None) -> Counters | None:
    """The spec-decode counters of one /metrics page; None when the server exposes none.

    Series of every engine are summed; with `model_name`, only that served model counts.
    """
    found = False
    totals = {DRAFTS: 0.0, DRAFT_TOKENS: 0.0, ACCEPTED: 0.0}
    per_pos: dict[int, float] = {}
    created: float | None = None
    itl_sum = itl_count = running = 0.0
    for sample in parse(text, _keep):
        if model_name is not None and sample.labels.get("model_name", model_name) != model_name:
            continue
        name = sample.name
        if name == f"{ITL}_sum":
            itl_sum += sample.value
            continue
        if name == f"{ITL}_count":
            itl_count += sample.value
            continue
        if name == RUNNING:
            running += sample.value
            continue
        if name.endswith("_created"):
            if name.removesuffix("_created") in FAMILIES:
                created = max(created or 0.0, sample.value)
            continue
        if not name.endswith("_total"):
            continue
        family = name.removesuffix("_total")
        if family == PER_POS:
            try:
                position = int(sample.labels.get("position", ""))
            except ValueError:
                continue
            per_pos[position] = per_pos.get(position, 0.0) + sample.value
            found = True
        elif family in totals:
            totals[family] += sample.value
            found = True
    if not found:
        return None
    return Counters(
        totals[DRAFTS],
        totals[DRAFT_TOKENS],
        totals[ACCEPTED],
        per_pos,
        created,
        itl_sum=itl_sum,
        itl_count=itl_count,
        running=running,
    )


def _round(value: float) -> float:
    return round(value, DECIMALS)


def summarize(delta: Counters, *, window_seconds: int, pods: int, source: str) -> dict[str, Any]:
    """status.acceptance from counter increases over the window (rates rounded to 3 decimals)."""
    out: dict[str, Any] = {
        "drafts": round(delta.drafts),
        "draftTokens": round(delta.draft_tokens),
        "acceptedTokens": round(delta.accepted),
        "windowSeconds": int(window_seconds),
        "pods": pods,
        "source": source,
        "perPosition": [],
    }
    if delta.draft_tokens > 0:
        out["acceptanceRate"] = _round(delta.accepted / delta.draft_tokens)
    if delta.drafts > 0:
        out["meanAcceptanceLength"] = _round(1 + delta.accepted / delta.drafts)
        out["perPosition"] = [_round(delta.per_pos[i] / delta.drafts) for i in sorted(delta.per_pos)]
    return out


def same_values(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Equal after rounding, ignoring lastScrapeTime: then status is not rewritten."""
    if a is None or b is None:
        return a is b
    strip = ("lastScrapeTime",)
    return {k: v for k, v in a.items() if k not in strip} == {k: v for k, v in b.items() if k not in strip}
