"""`speculators capture-proxy`: serve in front of vLLM and keep sampled chat prompts as rotated JSONL."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
from pathlib import Path
from urllib.parse import urlsplit

from speculators_core.cli.common import ExitCode, UserError

NAME = "capture-proxy"
HELP = "OpenAI-compatible pass-through proxy that captures sampled chat requests (messages only) as JSONL"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="0.0.0.0:8100", metavar="HOST:PORT", help="where to serve")
    parser.add_argument(
        "--upstream", default="http://127.0.0.1:8000", metavar="URL", help="the vLLM server (http only)"
    )
    parser.add_argument("--dir", required=True, type=Path, help="directory of the capture files")
    parser.add_argument("--sample-rate", type=float, default=0.1, help="fraction of requests kept (0-1)")
    parser.add_argument(
        "--max-records", type=int, default=100_000, help="records kept by this pod (oldest files go first)"
    )
    parser.add_argument("--records-per-file", type=int, default=1000, help="records per rotated file")
    parser.add_argument(
        "--prefix",
        default=None,
        help="file name prefix, one per writer (default: $POD_NAME, else the host name)",
    )


def _host_port(value: str, flag: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"{flag} {value!r}: expected HOST:PORT, e.g. 0.0.0.0:8100")
    return host.strip("[]") or "0.0.0.0", int(port)


def run(args: argparse.Namespace) -> int:
    from speculators_core.capture.proxy import CaptureProxy
    from speculators_core.capture.records import Sampler
    from speculators_core.capture.writer import CaptureWriter

    if not 0.0 <= args.sample_rate <= 1.0:
        raise UserError(f"--sample-rate {args.sample_rate}: must lie in 0..1, e.g. 0.1")
    up = urlsplit(args.upstream)
    if up.scheme != "http" or not up.hostname:
        raise UserError(f"--upstream {args.upstream!r}: expected http://HOST:PORT (the pod's vLLM)")
    host, port = _host_port(args.listen, "--listen")
    prefix = args.prefix or os.environ.get("POD_NAME") or socket.gethostname()
    try:
        writer = CaptureWriter(
            args.dir, prefix, records_per_file=args.records_per_file, max_records=args.max_records
        )
    except ValueError as exc:
        raise UserError(f"--prefix: {exc}") from None
    writer.start()
    proxy = CaptureProxy(up.hostname, up.port or 80, writer, Sampler(args.sample_rate))

    async def main() -> None:
        server = await proxy.serve(host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(
            f"capture-proxy: {host}:{port} -> {args.upstream}, keeping {args.sample_rate:g} in {args.dir}",
            flush=True,
        )
        async with server:
            await stop.wait()

    try:
        asyncio.run(main())
    finally:
        writer.close()  # the open file is finished (fsync'd, renamed) on SIGTERM
    return ExitCode.OK
