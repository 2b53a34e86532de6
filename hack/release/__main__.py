"""python -m release chart|bundle|all [--check]  (PYTHONPATH=hack; `make chart`, `make bundle`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from release import files
from release.paths import REPO


def _targets(what: str) -> list[tuple[dict[Path, str], tuple[Path, ...]]]:
    out = []
    if what in ("chart", "all"):
        from release import chart

        out.append((chart.chart_files(), chart.OWNED_DIRS))
    if what in ("bundle", "all"):
        from release import bundle

        out.append((bundle.bundle_files(), bundle.OWNED_DIRS))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m release", description=__doc__)
    parser.add_argument("what", choices=["chart", "bundle", "all"])
    parser.add_argument("--check", action="store_true", help="report drift (exit 1) instead of writing")
    args = parser.parse_args(argv)
    stale: list[Path] = []
    for generated, owned in _targets(args.what):
        if args.check:
            stale += files.drift(generated, owned_dirs=owned)
        else:
            files.write(generated, owned_dirs=owned)
    for path in stale:
        print(f"drift: {path.relative_to(REPO)} (run `make {args.what}`)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
