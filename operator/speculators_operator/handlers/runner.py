"""At most one reconcile per object at a time; triggers that arrive meanwhile coalesce into one rerun.

Kopf's create/update/resume handlers await `run_now` (errors go back to Kopf, which retries them);
child events, scrapes and the resync loop call `trigger` (errors are retried here with backoff).
The reconcile function is synchronous (kubernetes client), so it runs in a pool of worker threads.

When more reconciles are due than there are workers, what a user just applied (Kopf's create/update)
goes before what a child event, a scrape or the resync asked for: a burst of new objects then gets its
children first instead of queueing behind the rollouts of the ones before it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (kind, namespace, name)
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
WORKERS = 16  # reconciles in flight at once (each is mostly waiting on the API server)
URGENT, BACKGROUND = 0, 1  # run_now from Kopf's create/update/resume; trigger from everything else


class PriorityGate:
    """At most `slots` holders at once; waiters are let in by (priority, arrival)."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    async def acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._seq), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted just as it was cancelled: pass the slot on
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)  # the slot goes straight to the next waiter
                return
        self._free += 1

    @property
    def waiting(self) -> int:
        return sum(not f.done() for _, _, f in self._waiters)


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
        self._gate = PriorityGate(workers)
        self._backoff = backoff
        self._locks: dict[Key, asyncio.Lock] = {}
        self._pending: set[Key] = set()
        self._workers: dict[Key, asyncio.Task[None]] = {}

    def _lock(self, key: Key) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def run_now(self, key: Key, priority: int = URGENT) -> None:
        """Reconcile now (after any run in progress); exceptions propagate."""
        async with self._lock(key):
            await self._gate.acquire(priority)
            try:
                self._pending.discard(key)
                await asyncio.get_running_loop().run_in_executor(self._executor, self._reconcile, *key)
            finally:
                self._gate.release()

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
                    await self.run_now(key, BACKGROUND)
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
