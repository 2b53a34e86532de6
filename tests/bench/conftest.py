"""Speed-up benchmark tier: the real GuideLLM (pinned, in `.venv-bench`) against the speculation-aware
stand-in of a vLLM server (hack/localrun/openai_speculative_standin.py), on loopback.

GuideLLM runs as a subprocess of `.venv-bench`'s python (its pins, e.g. click~=8.4, stay out of .venv).
Without .venv-bench the tests fail (CI always builds it): run `make bench-venv`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH_PYTHON = Path(os.environ.get("SPECULATORS_BENCH_PYTHON", ROOT / ".venv-bench" / "bin" / "python"))
sys.path.insert(0, str(ROOT / "hack"))


@pytest.fixture(scope="session")
def bench_python() -> Path:
    if not BENCH_PYTHON.exists():
        pytest.fail(
            f"{BENCH_PYTHON} is missing: this tier runs the real GuideLLM from it. Build it with "
            "`make bench-venv` (hack/setup-bench-venv.sh).",
            pytrace=False,
        )
    return BENCH_PYTHON


class StandInServer:
    """The stand-in served from a thread of this process (its own event loop), on a free loopback port."""

    def __init__(self, model, seed: int = 0) -> None:
        import asyncio

        from aiohttp import web
        from localrun.openai_speculative_standin import build_app

        self.model = model
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._app = build_app(model, seed=seed)
        self._runner = web.AppRunner(self._app, shutdown_timeout=1.0)  # requests GuideLLM cut off
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            self._loop.run_until_complete(site.start())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        if not started.wait(30):
            raise RuntimeError("the stand-in server did not start")

    @property
    def engine(self):
        from localrun.openai_speculative_standin import ENGINE

        return self._app[ENGINE]

    def close(self) -> None:
        import asyncio

        if not self._thread.is_alive():
            return  # closed already (the test, then the fixture)
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny tokenizer built here (GuideLLM's synthetic prompts are sized in its tokens)."""
    from speculators_core.testing.corpus import conversations
    from speculators_core.testing.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer([m["content"] for c in conversations(200) for m in c], out)
    return out


def run_guidellm(python: Path, scenario: dict, out: Path, timeout: float = 900) -> Path:
    """`guidellm run --scenario FILE` (GuideLLM's own scenario format), its JSON report at `out`."""
    spec = scenario.setdefault("spec", {})
    spec["outputs"] = [{"kind": "json", "path": str(out)}]
    path = out.with_suffix(".scenario.json")
    path.write_text(json.dumps(scenario))
    cmd = [str(python), "-m", "guidellm", "run", "--scenario", str(path), "--disable-console-interactive"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=out.parent)
    if proc.returncode != 0 or not out.exists():
        tail = f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        raise AssertionError(f"guidellm failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return out


def chromium() -> str:
    """Headless Chromium (hack/setup-chromium.sh installs Debian's); the test fails without one."""
    from speculators_core.cli.report import find_browser

    found = find_browser(os.environ.get("SPECULATORS_BROWSER"))
    if found is None:
        pytest.fail(
            "no Chromium on PATH: this test renders the report in it. Install it with "
            "`bash hack/setup-chromium.sh` (Debian's chromium package) or set SPECULATORS_BROWSER.",
            pytrace=False,
        )
    return found
