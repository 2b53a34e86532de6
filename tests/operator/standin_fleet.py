"""Stand-ins that run beside the operator for the length of a `with` block: speculation-aware vLLM
servers for a Speculator's pods, and KServe's InferenceService controller."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from localrun.kserve_standin import KServeStandIn
from localrun.vllm_standin import Fleet, Scenario


@contextmanager
def in_background(run: Callable[[threading.Event], None]) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def fleet(k: Any, speculator: str, scenario: Scenario, port: int = 8000) -> Iterator[Fleet]:
    """A stand-in vLLM server per Running pod of `speculator` (kwok runs no containers)."""
    stand_ins = Fleet(lambda: k.pods(f"speculators.ai/speculator={speculator}"), scenario, port)
    try:
        with in_background(stand_ins.run):
            yield stand_ins
    finally:
        stand_ins.close()


@contextmanager
def kserve_controller(api: Any, namespace: str) -> Iterator[KServeStandIn]:
    """KServe's controller for the InferenceServices of `namespace` (KServe cannot run here)."""
    standin = KServeStandIn(api, namespace)
    with in_background(standin.run):
        yield standin
