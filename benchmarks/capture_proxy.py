"""Latency the traffic-capture proxy adds per request, and its throughput ceiling, against the floor: the
same client talking to the same upstream directly, in the same run.

Upstream: hack/localrun/openai_stub.py (a stand-in for vLLM's OpenAI server: no GPU here), in its own
process; the proxy is the real `speculators capture-proxy` in its own process, capturing every request
(sample rate 1, the worst case) to a temporary directory. Loopback only.

Prints one JSON line: p50/p99 latency direct and proxied over sequential keep-alive requests, the added
p50 (target < 1 ms), and requests/s direct and proxied with 32 concurrent connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))

from kubecluster.procs import free_port  # noqa: E402

BODY = json.dumps(
    {"model": "model", "messages": [{"role": "user", "content": "How far is the moon? " * 20}]}
).encode()
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
    + BODY
)
STUB = """
import asyncio, sys
sys.path.insert(0, sys.argv[2])
from localrun.openai_stub import OpenAIStub
async def main():
    server = await OpenAIStub().serve("127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
    await reader.readexactly(length)


async def latencies(port: int, n: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await _one(reader, writer)
        out.append(time.perf_counter() - t)
    writer.close()
    return out


async def throughput(port: int, connections: int, seconds: float) -> float:
    done = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < end:
            await _one(reader, writer)
            done += 1
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return done / (time.perf_counter() - start)


def _started(argv: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()  # "ready" / the proxy's banner: it is serving
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    up_port, proxy_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        stub = _started([sys.executable, "-c", STUB, str(up_port), str(REPO / "hack")])
        proxy = _started(
            [
                sys.executable,
                "-m",
                "speculators_core.cli",
                "capture-proxy",
                "--listen",
                f"127.0.0.1:{proxy_port}",
                "--upstream",
                f"http://127.0.0.1:{up_port}",
                "--dir",
                tmp,
                "--sample-rate",
                "1",
                "--prefix",
                "bench",
            ]
        )
        try:
            asyncio.run(latencies(up_port, 200))  # warm both paths
            asyncio.run(latencies(proxy_port, 200))
            direct = asyncio.run(latencies(up_port, args.requests))
            proxied = asyncio.run(latencies(proxy_port, args.requests))
            rps_direct = asyncio.run(throughput(up_port, args.connections, args.seconds))
            rps_proxied = asyncio.run(throughput(proxy_port, args.connections, args.seconds))
        finally:
            for p in (proxy, stub):
                p.terminate()
                p.wait()
        kept = sum(len(f.read_bytes().splitlines()) for f in Path(tmp).glob("bench.*"))

    def q(values: list[float], p: float) -> float:
        return round(1000 * statistics.quantiles(values, n=100)[int(p) - 1], 4)

    added = q(proxied, 50) - q(direct, 50)
    print(
        json.dumps(
            {
                "benchmark": "capture_proxy",
                "requests": args.requests,
                "p50_ms_direct": q(direct, 50),
                "p50_ms_proxied": q(proxied, 50),
                "p99_ms_direct": q(direct, 99),
                "p99_ms_proxied": q(proxied, 99),
                "added_p50_ms": round(added, 4),
                "target_added_p50_ms": 1.0,
                "meets_target": added < 1.0,
                "rps_direct": round(rps_direct),
                "rps_proxied": round(rps_proxied),
                "connections": args.connections,
                "records_captured": kept,
            }
        )
    )


if __name__ == "__main__":
    main()
