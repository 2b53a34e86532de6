"""Conversation -> token ids + loss mask with the verifier tokenizer's own chat template.

The mask covers exactly what the verifier generates in a chat: for assistant turn j, the text that the
template renders after `render(messages[:j], add_generation_prompt=True)` up to
`render(messages[:j+1])` (content, reasoning block, end-of-turn marker). Templates with
`{% generation %}` markers use transformers' own assistant mask instead.

History rewriting (deliberate): when a template renders earlier turns differently once a later turn
exists (Qwen3 drops the `<think>` blocks of earlier assistant turns), a single sequence cannot match
what the verifier saw while generating every turn. The conversation is then split at each rewrite into
samples that each end with the turn(s) generated on that exact history, so the draft trains on
contexts it meets when serving. Prefix-stable templates give one sample per conversation.

Reasoning: `keep` trains on `<think>` content (and passes `reasoning_content` to the template);
`strip` removes `<think>…</think>` blocks and `reasoning_content` before rendering.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

Reasoning = Literal["keep", "strip"]

_THINK = re.compile(r"<think>.*?</think>\s*", re.DOTALL)
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
_PROBE = [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]


class TemplateError(ValueError):
    """The tokenizer/template cannot produce assistant loss masks at all (not a per-row problem)."""


class RowTemplateError(ValueError):
    """The template failed on one conversation (counted as a skip)."""


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    loss_mask: list[int]


def strip_reasoning(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        if m["role"] == "assistant":
            m = {k: v for k, v in m.items() if k != "reasoning_content"}
            m["content"] = _THINK.sub("", m["content"]).lstrip()
        out.append(m)
    return out


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class ChatEncoder:
    def __init__(self, tokenizer: Any, reasoning: Reasoning = "keep", *, name: str = "verifier") -> None:
        if reasoning not in ("keep", "strip"):
            raise ValueError(f"--reasoning must be keep or strip, got {reasoning!r}")
        template = getattr(tokenizer, "chat_template", None)
        if not template:
            raise TemplateError(
                f"the tokenizer of {name} has no chat_template; use the chat (instruct) variant of the model "
                "or a tokenizer whose tokenizer_config.json defines one"
            )
        if not getattr(tokenizer, "is_fast", False):
            raise TemplateError(
                f"the tokenizer of {name} is not a fast tokenizer; offsets are needed for loss masks"
            )
        self.tok = tokenizer
        self.reasoning = reasoning
        self.name = name
        self.uses_generation_tags = bool(
            _GENERATION_TAG.search(template if isinstance(template, str) else "")
        )
        self._probe()

    def _render(self, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
        try:
            text = self.tok.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation_prompt
            )
        except Exception as exc:  # jinja raises arbitrary errors (e.g. "roles must alternate")
            raise RowTemplateError(f"{type(exc).__name__}: {exc}") from None
        if not isinstance(text, str):
            raise RowTemplateError("apply_chat_template did not return text")
        return text

    def _probe(self) -> None:
        """Fail early (and permanently) when the template cannot mark assistant turns."""
        try:
            samples = self.encode(_PROBE)
        except RowTemplateError as exc:
            raise TemplateError(
                f"the chat template of {self.name} cannot mark assistant turns (on a plain user/assistant "
                f"exchange: {exc}); use a template that renders assistant messages"
            ) from None
        masked = "".join(
            self.tok.decode([t for t, m in zip(s.input_ids, s.loss_mask, strict=True) if m]) for s in samples
        )
        if "pong" not in masked:
            raise TemplateError(
                f"the chat template of {self.name} cannot mark assistant turns: the assistant reply of a "
                f"test exchange is not in the rendered assistant span (masked: {masked!r}); use a "
                "template that renders assistant messages"
            )

    def encode(self, messages: list[dict[str, Any]]) -> list[Encoded]:
        if self.reasoning == "strip":
            messages = strip_reasoning(messages)
        if self.uses_generation_tags:
            return [self._encode_generation_tags(messages)]
        return [self._tokenize(text, spans) for text, spans in self._spans(messages)]

    def _spans(self, messages: list[dict[str, Any]]) -> list[tuple[str, list[tuple[int, int]]]]:
        """(rendered text, assistant char spans) per sample."""
        samples: list[tuple[str, list[tuple[int, int]]]] = []
        text: str | None = None
        spans: list[tuple[int, int]] = []
        for j, msg in enumerate(messages):
            if msg["role"] != "assistant":
                continue
            prompt = self._render(messages[:j], True)
            full = self._render(messages[: j + 1], False)
            start = len(prompt) if full.startswith(prompt) else _common_prefix(prompt, full)
            if start >= len(full):
                raise RowTemplateError(f"assistant turn {j} renders no text")
            if text is not None and not full.startswith(text):
                samples.append((text, spans))  # history rewritten: close the sample
                spans = []
            text = full
            spans.append((start, len(full)))
        if text is not None:
            samples.append((text, spans))
        return samples

    def _tokenize(self, text: str, spans: list[tuple[int, int]]) -> Encoded:
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        mask = []
        for a, b in enc["offset_mapping"]:
            inside = any(a < e and b > s for s, e in spans) if b > a else any(s <= a < e for s, e in spans)
            mask.append(1 if inside else 0)
        return Encoded(ids, mask)

    def _encode_generation_tags(self, messages: list[dict[str, Any]]) -> Encoded:
        try:
            out = self.tok.apply_chat_template(
                messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
            )
        except Exception as exc:
            raise RowTemplateError(f"{type(exc).__name__}: {exc}") from None
        return Encoded(list(out["input_ids"]), [int(x) for x in out["assistant_masks"]])
