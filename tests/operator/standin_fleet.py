"""Speculation-aware vLLM stand-ins for the pods of one Speculator, for the length of a `with` block."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from localrun.vllm_standin import Fleet, Scenario


@contextmanager
def fleet(k: Any, speculator: str, scenario: Scenario, port: int = 8000) -> Iterator[Fleet]:
    """A stand-in vLLM server per Running pod of `speculator` (kwok runs no containers)."""
    stand_ins = Fleet(lambda: k.pods(f"speculators.ai/speculator={speculator}"), scenario, port)
    stop = threading.Event()
    thread = threading.Thread(target=stand_ins.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield stand_ins
    finally:
        stop.set()
        thread.join()
        stand_ins.close()
