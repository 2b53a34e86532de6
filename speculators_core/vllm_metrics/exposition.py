"""A tolerant reader of the Prometheus text exposition format.

A vLLM /metrics page carries hundreds of series; we want four counter families. Lines that are comments,
other metrics, or malformed are skipped instead of failing the whole scrape (a parser that raises on one odd
line would blank the acceptance of a healthy server).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(
    rf"^(?P<name>{_NAME})(?:\{{(?P<labels>.*)\}})?\s+(?P<value>\S+)(?:\s+(?P<ts>-?\d+))?\s*$"
)
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def _unescape(value: str) -> str:
    return re.sub(r'\\[\\"n]', lambda m: _ESCAPES[m.group(0)], value)


def _labels(text: str) -> dict[str, str] | None:
    out: dict[str, str] = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _LABEL.match(text, pos)
        if not match:
            return None
        out[match.group(1)] = _unescape(match.group(2))
        pos = match.end()
    return out


def _value(text: str) -> float | None:
    try:
        value = float(text)  # accepts NaN, +Inf, -Inf, 1e+09
    except ValueError:
        return None
    return value


def parse(text: str, keep: Callable[[str], bool] | None = None) -> Iterator[Sample]:
    """Samples of the families `keep` accepts (by sample name); everything else is skipped cheaply."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name_end = line.find("{")
        if name_end < 0:
            name_end = line.find(" ")
        if name_end <= 0 or (keep is not None and not keep(line[:name_end])):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = _labels(match.group("labels") or "")
        value = _value(match.group("value"))
        if labels is None or value is None or math.isnan(value):
            continue
        yield Sample(match.group("name"), labels, value)
