"""What a captured request keeps: the chat messages and nothing else (no headers, no auth, no options)."""

from __future__ import annotations

import json
import random
from typing import Any

CAPTURED_PATHS = ("/v1/chat/completions",)
# A request with this header set to "off" passes through uncaptured (prepare-data's regeneration sends it).
NO_CAPTURE_HEADER = "X-Speculators-Capture"
_KEPT_KEYS = ("role", "content")


def _clean_content(content: Any) -> Any:
    """Text content as it was; multimodal parts reduced to their text parts (images are not kept)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(t for t in texts if isinstance(t, str))
    return None


def messages_of(body: bytes) -> list[dict[str, str]] | None:
    """The messages of a chat-completions request body, or None when it has none worth keeping."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        return None
    out = []
    for message in request["messages"]:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return None
        content = _clean_content(message.get("content"))
        if content is None:
            return None
        out.append({key: message[key] if key == "role" else content for key in _KEPT_KEYS})
    return out or None


def record_line(messages: list[dict[str, str]]) -> bytes:
    """One JSONL line, in the OpenAI `messages` row shape prepare-data reads."""
    return (json.dumps({"messages": messages}, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


class Sampler:
    """Keeps each request with probability `rate` (an injectable RNG makes tests exact)."""

    def __init__(self, rate: float, rng: random.Random | None = None) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"sample rate {rate} must lie in 0..1")
        self.rate = rate
        self.rng = rng or random.Random()

    def keep(self) -> bool:
        if self.rate >= 1.0:
            return True
        return self.rate > 0.0 and self.rng.random() < self.rate
