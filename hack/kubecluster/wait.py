"""Polling a condition with a deadline; the failure names what was awaited and the last state seen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold in time. An AssertionError, so pytest reports it as a test failure."""


def _short(value: Any, limit: int = 2000) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def wait_for(
    fetch: Callable[[], T],
    until: Callable[[T], bool] | None = None,
    *,
    timeout: float = 30.0,
    what: str | None = None,
    ignore: tuple[type[BaseException], ...] = (),
    interval: float = 0.05,
    max_interval: float = 0.5,
) -> T:
    """Calls `fetch` until `until(value)` (or the value's truthiness) holds; returns that value.

    Exceptions of the `ignore` types count as "not yet" (e.g. a 404 before an object exists).
    On timeout raises WaitTimeout with the last value or exception observed.
    """
    deadline = time.monotonic() + timeout
    last: Any = "<never observed>"
    while True:
        try:
            value = fetch()
        except ignore as exc:
            last = exc
        else:
            if until(value) if until is not None else value:
                return value
            last = value
        if time.monotonic() >= deadline:
            label = what or getattr(fetch, "__name__", "condition")
            raise WaitTimeout(
                f"timed out after {timeout:g}s waiting for {label}; last observed: {_short(last)}"
            )
        # Polling with a short back-off: a condition, not a fixed sleep, decides when we move on.
        time.sleep(interval)
        interval = min(interval * 1.5, max_interval)
