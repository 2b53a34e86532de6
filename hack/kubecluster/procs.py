"""Child processes of the control plane: each in its own process group, logging to a file, with a pid
file (pid + kernel start time, so a recycled pid is never signalled) that lets another process stop it."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat; None when the process is gone or a zombie (exited, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def _die_with_parent() -> None:
    # The kernel SIGKILLs the child when the pytest process dies (even by SIGKILL): no orphans.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class Proc:
    name: str
    pid: int
    start_time: str
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        if self.popen is not None and self.popen.poll() is not None:
            return False
        return _start_time(self.pid) == self.start_time

    def exit_code(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def tail(self, lines: int = 40) -> str:
        return tail(self.log, lines)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "pid": self.pid, "start_time": self.start_time, "log": str(self.log)}


def tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def start(
    name: str,
    argv: Sequence[str],
    log: Path,
    pid_dir: Path,
    *,
    detach: bool,
    env: dict[str, str] | None = None,
) -> Proc:
    """Starts `argv` in a new session. Without `detach` it dies with this process."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if detach else _die_with_parent,
            env=env,
            close_fds=True,
        )
    started = _start_time(popen.pid) or ""
    proc = Proc(name, popen.pid, started, log, popen)
    pid_dir.mkdir(parents=True, exist_ok=True)
    (pid_dir / f"{name}.json").write_text(json.dumps(proc.to_json()))
    return proc


def load(pid_dir: Path) -> list[Proc]:
    procs = []
    for f in sorted(pid_dir.glob("*.json")):
        d = json.loads(f.read_text())
        procs.append(Proc(d["name"], int(d["pid"]), str(d["start_time"]), Path(d["log"])))
    return procs


def kill(proc: Proc) -> None:
    """SIGKILL to the process group, as a crash would end it; returns once it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.popen is not None:
        proc.popen.wait(timeout=10)
    while proc.alive():
        time.sleep(0.05)


def stop(procs: Sequence[Proc], pid_dir: Path | None = None, grace: float = 10.0) -> list[str]:
    """Stops the processes one after the other, in the given order (clients before the servers they
    need, so each shuts down cleanly): SIGTERM to the process group, SIGKILL after `grace` seconds.
    Returns the names that needed SIGKILL."""
    killed = []
    for p in procs:
        if p.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while p.alive() and time.monotonic() < deadline:
            if p.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.popen.wait(timeout=0.1)
            else:
                time.sleep(0.05)  # not our child: nothing to wait() on, so poll /proc
        if p.alive():
            killed.append(p.name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            if p.popen is not None:
                p.popen.wait(timeout=10)
        if pid_dir is not None:
            (pid_dir / f"{p.name}.json").unlink(missing_ok=True)
    return killed
