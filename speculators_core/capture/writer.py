"""Append captured records to rotated JSONL files: written to `.part`, fsync'd, then renamed.

A finished file (`<prefix>.<seq>.jsonl`) is always whole. The open file (`.jsonl.part`) gets each record in
one write(2) with O_APPEND, and an fsync at least every `fsync_seconds`; a crash (kill -9) can cut only its
last line, and the next start truncates that line off and finishes the file. Writing happens on a thread
fed by a bounded queue, so a slow disk never delays a request: when the queue is full the record is
dropped and counted.
"""

from __future__ import annotations

import os
import queue
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

PART = ".jsonl.part"
DONE = ".jsonl"


@dataclass
class WriterStats:
    written: int = 0
    dropped: int = 0  # queue full: the disk could not keep up
    pruned_files: int = 0
    recovered_files: int = 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def recover_part(path: Path) -> Path | None:
    """Finish a `.part` left by a crash: cut a partial last line, rename it done (or delete it if empty)."""
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if not whole:
        path.unlink()
        return None
    if len(whole) != len(data):
        with path.open("r+b") as fh:
            fh.truncate(len(whole))
            fh.flush()
            os.fsync(fh.fileno())
    done = path.with_name(path.name[: -len(PART)] + DONE)
    os.replace(path, done)
    return done


class CaptureWriter:
    """Rotated JSONL files of one writer (one pod: `prefix` is its name) under `directory`."""

    def __init__(
        self,
        directory: Path,
        prefix: str,
        *,
        records_per_file: int = 1000,
        max_records: int = 100_000,
        fsync_seconds: float = 1.0,
        queue_size: int = 10_000,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", prefix):
            raise ValueError(f"capture file prefix {prefix!r} must be a file-name-safe word")
        self.dir = Path(directory)
        self.prefix = prefix
        self.records_per_file = max(1, records_per_file)
        self.max_records = max(1, max_records)
        self.fsync_seconds = fsync_seconds
        self.stats = WriterStats()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=queue_size)
        self._finished: deque[tuple[Path, int]] = deque()
        self._fd: int | None = None
        self._part: Path | None = None
        self._in_part = 0
        self._seq = 0
        self._thread: threading.Thread | None = None

    # -- files ------------------------------------------------------------------------------------

    def _pattern(self) -> re.Pattern[str]:
        return re.compile(rf"^{re.escape(self.prefix)}\.(\d+)\.jsonl(\.part)?$")

    def _scan(self) -> None:
        """Recover our `.part` files, then know our finished files (oldest first) and the next sequence."""
        self.dir.mkdir(parents=True, exist_ok=True)
        pattern = self._pattern()
        for path in sorted(self.dir.iterdir()):
            match = pattern.match(path.name)
            if match and match.group(2) and recover_part(path) is not None:
                self.stats.recovered_files += 1
        done = []
        for path in self.dir.iterdir():
            match = pattern.match(path.name)
            if match and not match.group(2):
                done.append((int(match.group(1)), path))
        for seq, path in sorted(done):
            self._finished.append((path, _count_lines(path)))
            self._seq = max(self._seq, seq + 1)
        self._prune()

    def _open(self) -> None:
        self._part = self.dir / f"{self.prefix}.{self._seq:08d}{PART}"
        self._seq += 1
        self._fd = os.open(self._part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._in_part = 0

    def _finish(self) -> None:
        """fsync, rename `.part` to `.jsonl`, fsync the directory: the file is whole from here on."""
        if self._fd is None or self._part is None:
            return
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        if self._in_part == 0:
            self._part.unlink()
        else:
            done = self._part.with_name(self._part.name[: -len(PART)] + DONE)
            os.replace(self._part, done)
            _fsync_dir(self.dir)
            self._finished.append((done, self._in_part))
            self._in_part = 0
            self._prune()
        self._part = None

    def _prune(self) -> None:
        """Finished files keep at most max_records records (the open one adds up to records_per_file): the
        oldest files go first."""
        total = sum(n for _, n in self._finished)
        while self._finished and total > self.max_records:
            path, n = self._finished.popleft()
            path.unlink(missing_ok=True)
            total -= n
            self.stats.pruned_files += 1

    def write_line(self, line: bytes) -> None:
        """Append one record (a whole line, in one write) and rotate when the file is full."""
        if self._fd is None:
            self._open()
        assert self._fd is not None
        os.write(self._fd, line)
        self._in_part += 1
        self.stats.written += 1
        if self._in_part >= self.records_per_file:
            self._finish()

    # -- thread -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._scan()
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()

    def submit(self, line: bytes) -> bool:
        """Queue a record without blocking; False (and counted) when the writer is behind."""
        try:
            self._queue.put_nowait(line)
            return True
        except queue.Full:
            self.stats.dropped += 1
            return False

    def _run(self) -> None:
        last_sync = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=self.fsync_seconds)
            except queue.Empty:
                item = b""
            if item is None:
                self._finish()
                self._queue.task_done()
                return
            if item:
                self.write_line(item)
                self._queue.task_done()
            if self._fd is not None and time.monotonic() - last_sync >= self.fsync_seconds:
                os.fsync(self._fd)
                last_sync = time.monotonic()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record is written (tests, and shutdown)."""
        deadline = time.monotonic() + timeout
        done = self._queue.all_tasks_done
        with done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                done.wait(remaining)
        return True

    def close(self) -> None:
        """Write what is queued, finish the open file, stop the thread."""
        if self._thread is None:
            self._finish()
            return
        self._queue.put(None)
        self._thread.join()
        self._thread = None
