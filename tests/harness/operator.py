"""Running a Kopf operator in-process against the test cluster (kopf.testing.KopfRunner: a thread of the
test process, so the operator's exceptions and output come back to the test)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kopf.testing import KopfRunner


class OperatorRunners:
    """Starts operators with `start(argv)`; `stop_all()` stops them and re-raises what they raised."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.runners: list[KopfRunner] = []

    def start(
        self, argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 60.0, **kwargs: Any
    ) -> KopfRunner:
        """`argv` is kopf's command line, e.g. ["run", "--standalone", "-n", ns, "-m", "pkg.main"]."""
        from kopf.testing import KopfRunner

        runner = KopfRunner(
            list(argv), env={"KUBECONFIG": str(self.kubeconfig), **(env or {})}, timeout=timeout, **kwargs
        )
        runner.__enter__()
        self.runners.append(runner)
        return runner

    def stop_all(self) -> None:
        errors: list[BaseException] = []
        while self.runners:
            runner = self.runners.pop()
            try:
                runner.__exit__(None, None, None)
            except BaseException as exc:  # report every operator's failure, not just the first
                errors.append(exc)
        if errors:
            raise errors[0]
