"""At most one reconcile per object at a time; triggers that arrive meanwhile coalesce into one rerun.

Kopf's create/update/resume handlers await `run_now` (errors go back to Kopf, which retries them);
child events, scrapes and the resync loop call `trigger` (errors are retried here with backoff).
The reconcile function is synchronous (kubernetes client), so it runs in a pool of worker threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (kind, namespace, name)
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
WORKERS = 16  # reconciles in flight at once (each is mostly waiting on the API server)


class KeyedRunner:
    def __init__(
        self,
        reconcile: Callable[[str, str, str], None],
        backoff: tuple[float, ...] = BACKOFF,
        workers: int = WORKERS,
    ) -> None:
        self._reconcile = reconcile
        # Reconciles block on API calls, not on the CPU: more threads than asyncio's default pool (cores + 4)
        # keep a burst of new objects from queueing behind each other.
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")
        self._backoff = backoff
        self._locks: dict[Key, asyncio.Lock] = {}
        self._pending: set[Key] = set()
        self._workers: dict[Key, asyncio.Task[None]] = {}

    def _lock(self, key: Key) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def run_now(self, key: Key) -> None:
        """Reconcile now (after any run in progress); exceptions propagate."""
        async with self._lock(key):
            self._pending.discard(key)
            await asyncio.get_running_loop().run_in_executor(self._executor, self._reconcile, *key)

    def trigger(self, key: Key) -> None:
        """Ask for a reconcile soon; many triggers during one run give one more run, not many."""
        self._pending.add(key)
        worker = self._workers.get(key)
        if worker is None or worker.done():
            self._workers[key] = asyncio.get_running_loop().create_task(
                self._work(key), name=f"reconcile {key}"
            )

    async def _work(self, key: Key) -> None:
        failures = 0
        try:
            while key in self._pending:
                try:
                    await self.run_now(key)
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    delay = self._backoff[min(failures, len(self._backoff) - 1)]
                    failures += 1
                    log.warning("reconcile %s failed (retry in %.0fs): %s", key, delay, exc)
                    self._pending.add(key)
                    await asyncio.sleep(delay)
        finally:
            if self._workers.get(key) is asyncio.current_task():
                del self._workers[key]

    def forget(self, key: Key) -> None:
        self._pending.discard(key)

    async def idle(self) -> None:
        """Wait until no worker runs (tests, shutdown)."""
        while self._workers:
            await asyncio.gather(*list(self._workers.values()), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._workers.values()):
            task.cancel()
        await asyncio.gather(*list(self._workers.values()), return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
