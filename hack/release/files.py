"""Generated files as data: write them, or report which ones differ from what is on disk."""

from __future__ import annotations

from pathlib import Path


def write(files: dict[Path, str], *, owned_dirs: tuple[Path, ...] = ()) -> None:
    """Write every file; in `owned_dirs` (wholly generated), remove files that are no longer generated."""
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    for directory in owned_dirs:
        for stale in directory.rglob("*"):
            if stale.is_file() and stale not in files:
                stale.unlink()


def drift(files: dict[Path, str], *, owned_dirs: tuple[Path, ...] = ()) -> list[Path]:
    """Files that are missing, stale, or left over in a wholly generated directory."""
    problems = [p for p, text in files.items() if not p.is_file() or p.read_text() != text]
    for directory in owned_dirs:
        if directory.is_dir():
            problems += [p for p in directory.rglob("*") if p.is_file() and p not in files]
    return sorted(problems)
