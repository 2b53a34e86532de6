"""Response regeneration: replace every assistant turn by what the verifier itself answers.

Training data is then on-policy: the draft learns the verifier's own continuations (upstream's
recommended default, PR #725). Turns are regenerated in order, each on the history with the earlier
turns already regenerated, as the verifier would have produced the whole conversation.

Backends: an OpenAI-compatible endpoint (a vLLM server; `/v1/chat/completions`, concurrent requests,
retried with backoff), else transformers `generate` on the verifier (batched, left padding).
Greedy by default (temperature 0), matching greedy verification.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from speculators_core.capture.records import NO_CAPTURE_HEADER


@dataclass(frozen=True)
class Reply:
    content: str
    reasoning: str | None = None


class Generator(Protocol):
    def generate(self, prompts: Sequence[list[dict[str, Any]]]) -> list[Reply]: ...


class EndpointUnavailable(ConnectionError):
    """The endpoint did not answer after retries (transient: the Job retries)."""


class EndpointGenerator:
    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        concurrency: int = 16,
        timeout: float = 300.0,
        retries: int = 4,
        api_key: str | None = None,
    ) -> None:
        base = url.rstrip("/")
        self.base = base if base.endswith("/v1") else base + "/v1"
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.concurrency = concurrency
        self.timeout = timeout
        self.retries = retries
        self.api_key = api_key
        self.model = model or self._discover_model()

    def _request(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if payload is None else json.dumps(payload).encode()
        # Regeneration through a Speculator's capture proxy must not be captured as live traffic.
        headers = {"Content-Type": "application/json", NO_CAPTURE_HEADER: "off"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.base + path, data=data, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                if exc.code < 500 and exc.code != 429:
                    body = exc.read()[:300].decode(errors="replace")
                    raise ValueError(f"{self.base}{path}: HTTP {exc.code}: {body}") from None
                last = exc
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as exc:
                last = exc
            if attempt < self.retries:
                time.sleep(min(30.0, 0.5 * 2**attempt))  # backoff between real network retries
        raise EndpointUnavailable(f"{self.base}{path}: no answer after {self.retries + 1} attempts ({last})")

    def _discover_model(self) -> str:
        models = self._request("/models").get("data") or []
        if not models:
            raise ValueError(f"{self.base}/models lists no model; pass the served model name")
        return str(models[0]["id"])

    def _one(self, messages: list[dict[str, Any]]) -> Reply:
        out = self._request(
            "/chat/completions",
            {
                "model": self.model,
                "messages": messages,
                "max_tokens": self.max_tokens,
                "temperature": self.temperature,
            },
        )
        msg = out["choices"][0]["message"]
        reasoning = msg.get("reasoning_content") or msg.get("reasoning")
        return Reply(content=msg.get("content") or "", reasoning=reasoning or None)

    def generate(self, prompts: Sequence[list[dict[str, Any]]]) -> list[Reply]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, prompts))


class LocalGenerator:
    """transformers `generate` on the verifier (the fallback when no endpoint is given)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
        batch_size: int = 16,
    ) -> None:
        self.model = model
        self.tok = tokenizer
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.batch_size = batch_size

    def generate(self, prompts: Sequence[list[dict[str, Any]]]) -> list[Reply]:
        import torch

        replies: list[Reply] = []
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        device = next(self.model.parameters()).device
        for i in range(0, len(prompts), self.batch_size):
            chunk = prompts[i : i + self.batch_size]
            ids = [
                list(
                    self.tok.apply_chat_template(
                        p, tokenize=True, add_generation_prompt=True, return_dict=True
                    )["input_ids"]
                )
                for p in chunk
            ]
            width = max(len(x) for x in ids)
            inp = torch.full((len(ids), width), pad, dtype=torch.long)
            att = torch.zeros((len(ids), width), dtype=torch.long)
            for r, x in enumerate(ids):  # left padding: generation continues at the right edge
                inp[r, width - len(x) :] = torch.tensor(x)
                att[r, width - len(x) :] = 1
            kwargs: dict[str, Any] = {"do_sample": self.temperature > 0}
            if self.temperature > 0:
                kwargs["temperature"] = self.temperature
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=inp.to(device),
                    attention_mask=att.to(device),
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=pad,
                    eos_token_id=self.tok.eos_token_id,
                    **kwargs,
                )
            for r in range(len(ids)):
                text = self.tok.decode(out[r, width:].tolist(), skip_special_tokens=True)
                replies.append(Reply(content=text.strip()))
        return replies


def regenerate(
    conversations: Sequence[list[dict[str, Any]]], generator: Generator
) -> list[list[dict[str, Any]]]:
    """Every assistant turn of every conversation replaced by the generator's reply, turn by turn.

    Turns are batched across conversations (round r regenerates each conversation's r-th assistant turn).
    """
    convs = [list(c) for c in conversations]
    positions = [[j for j, m in enumerate(c) if m["role"] == "assistant"] for c in convs]
    rounds = max((len(p) for p in positions), default=0)
    for r in range(rounds):
        todo = [(i, p[r]) for i, p in enumerate(positions) if len(p) > r]
        replies = generator.generate([convs[i][:j] for i, j in todo])
        for (i, j), reply in zip(todo, replies, strict=True):
            msg: dict[str, Any] = {"role": "assistant", "content": reply.content}
            if reply.reasoning:
                msg["reasoning_content"] = reply.reasoning
            convs[i][j] = msg
    return convs
