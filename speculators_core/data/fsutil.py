"""Write-then-rename helpers and disk-full detection: nothing half-written is ever visible."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class DiskFullError(OSError):
    """Writing failed because the volume (or a file-size limit) is full; finished files are kept."""


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


def disk_full(path: str | os.PathLike[str], exc: OSError) -> DiskFullError:
    free = ""
    with contextlib.suppress(OSError):
        free = f" ({shutil.disk_usage(Path(path).parent).free / 2**30:.2f} GiB free)"
    err = DiskFullError(
        exc.errno or errno.ENOSPC,
        f"no space left writing {path}{free}: {exc.strerror}; enlarge the volume (output.pvc.size) "
        "and re-run: finished work is kept and skipped",
    )
    return err


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.tmp-")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; other pods of the training read it
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if is_disk_full(exc):
            raise disk_full(target, exc) from exc  # type: ignore[arg-type]
        raise


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `final` (any previous one is removed)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp makes 0700; other pods of the training read it
    try:
        yield tmp
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise disk_full(final, exc) from exc  # type: ignore[arg-type]
        raise


def remove_stale_temps(directory: str | os.PathLike[str], pattern: str = ".*.tmp-*") -> int:
    """Delete temporary files/directories a killed writer left behind; returns how many."""
    n = 0
    for p in Path(directory).glob(pattern):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
        n += 1
    return n
