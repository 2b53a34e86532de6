"""The traffic-capture proxy: bytes pass through unchanged (streams too), sampled chat requests are kept as
messages only, files rotate and survive kill -9. The upstream is a stand-in for vLLM's OpenAI server
(hack/localrun/openai_stub.py): no GPU here to run vLLM itself."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from localrun.openai_stub import OpenAIStub

from speculators_core.capture.proxy import HEALTH_PATH, CaptureProxy
from speculators_core.capture.records import Sampler, messages_of, record_line
from speculators_core.capture.writer import CaptureWriter, recover_part

SECRET = "sk-live-THIS-MUST-NEVER-BE-WRITTEN"


def aio(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on its own event loop (no pytest-asyncio in the project's set-up)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


def chat(i: int, **extra: object) -> dict[str, object]:
    return {
        "model": "model",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": f"question {i}"},
        ],
        "temperature": 0.7,
        "user": f"user-{SECRET}",
        **extra,
    }


def lines(directory: Path) -> list[dict[str, object]]:
    out = []
    for path in sorted(directory.glob("*.jsonl*")):
        out += [json.loads(line) for line in path.read_bytes().splitlines()]
    return out


@asynccontextmanager
async def proxied(
    tmp_path: Path, rate: float = 1.0, stub: OpenAIStub | None = None, **writer_kw: int
) -> AsyncIterator[tuple[str, OpenAIStub, CaptureProxy, CaptureWriter]]:
    stub = stub or OpenAIStub()
    upstream = await stub.serve()
    writer = CaptureWriter(tmp_path / "capture", "pod-a", **writer_kw)
    writer.start()
    proxy = CaptureProxy(
        "127.0.0.1", upstream.sockets[0].getsockname()[1], writer, Sampler(rate, random.Random(7))
    )
    server = await proxy.serve("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", stub, proxy, writer
    finally:
        server.close()
        upstream.close()
        await asyncio.to_thread(writer.close)


@aio
async def test_responses_pass_through_byte_for_byte_and_only_messages_are_kept(tmp_path: Path) -> None:
    async with proxied(tmp_path) as (url, stub, _, writer), aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET, "Cookie": f"s={SECRET}"}
        for i in range(5):  # one kept-alive connection: five requests on it
            async with session.post(f"{url}/v1/chat/completions", json=chat(i), headers=headers) as resp:
                assert resp.status == 200
                assert json.loads(await resp.read())["choices"][0]["message"]["content"] == "hello"
        async with session.get(f"{url}/v1/models") as resp:
            assert resp.status == 200
        async with session.get(f"{url}{HEALTH_PATH}") as resp:  # answered by the proxy itself
            assert await resp.read() == b"ok"
        assert writer.flush()
    assert len(stub.bodies) == 6  # the health check never reached vLLM
    assert json.loads(stub.bodies[0]) == chat(0)  # the request reached vLLM unchanged
    kept = lines(tmp_path / "capture")
    assert kept == [{"messages": chat(i)["messages"]} for i in range(5)]
    for path in (tmp_path / "capture").iterdir():
        text = path.read_text()
        assert SECRET not in text and "Bearer" not in text and "temperature" not in text


@aio
async def test_a_streamed_answer_is_relayed_as_it_comes(tmp_path: Path) -> None:
    stub = OpenAIStub(gate=asyncio.Event())
    async with proxied(tmp_path, stub=stub) as (url, _, _, writer), aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/chat/completions", json=chat(0, stream=True)) as resp:
            # The first event arrives while the upstream still holds the rest back: nothing is buffered.
            first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), timeout=10)
            assert json.loads(first.removeprefix(b"data: "))["delta"] == "hel"
            stub.gate.set()
            rest = await resp.content.read()
        assert b'"lo"' in rest and b"[DONE]" in rest
        assert writer.flush()
    assert lines(tmp_path / "capture") == [{"messages": chat(0)["messages"]}]


@aio
async def test_raw_chunked_bytes_are_unchanged(tmp_path: Path) -> None:
    async with proxied(tmp_path) as (url, stub, _, _):
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps(chat(1, stream=True)).encode()
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        received = await reader.read()  # until the proxy closes, as asked
        writer.close()
    assert received == stub.responses[0]


@aio
async def test_sampling_keeps_the_fraction_the_rng_draws_and_failed_requests_are_not_kept(
    tmp_path: Path,
) -> None:
    n, rate = 200, 0.3
    replay = random.Random(7)
    expected = [i for i in range(n) if replay.random() < rate]
    async with proxied(tmp_path, rate=rate) as (url, _, proxy, writer), aiohttp.ClientSession() as s:
        for i in range(n):
            async with s.post(f"{url}/v1/chat/completions", json=chat(i)) as resp:
                await resp.read()
        # Not chat: never sampled, never drawn from the RNG.
        async with s.post(f"{url}/v1/completions", json={"prompt": "x"}) as resp:
            await resp.read()
        assert writer.flush()
        assert proxy.requests == n + 1
    kept = [int(str(r["messages"][1]["content"]).split()[1]) for r in lines(tmp_path / "capture")]
    assert kept == expected and 0.2 * n < len(kept) < 0.4 * n

    stub = OpenAIStub(status=500)
    async with proxied(tmp_path / "failed", stub=stub) as (url, _, _, writer), aiohttp.ClientSession() as s:
        async with s.post(f"{url}/v1/chat/completions", json=chat(0)) as resp:
            assert resp.status == 500
        assert writer.flush()
    assert lines(tmp_path / "failed" / "capture") == []


@aio
async def test_files_rotate_and_the_oldest_go_past_max_records(tmp_path: Path) -> None:
    async with proxied(tmp_path, records_per_file=10, max_records=25) as (url, _, _, writer):
        async with aiohttp.ClientSession() as s:
            for i in range(47):
                async with s.post(f"{url}/v1/chat/completions", json=chat(i)) as resp:
                    await resp.read()
        assert writer.flush()
        names = sorted(p.name for p in (tmp_path / "capture").iterdir())
        # 4 files finished (the first two pruned), 7 records in the open one.
        assert names == [
            "pod-a.00000002.jsonl",
            "pod-a.00000003.jsonl",
            "pod-a.00000004.jsonl.part",
        ]
        assert writer.stats.pruned_files == 2
    # Closing finishes the open file; finished files hold at most max_records, so one more goes.
    names = sorted(p.name for p in (tmp_path / "capture").iterdir())
    assert names == ["pod-a.00000003.jsonl", "pod-a.00000004.jsonl"]
    kept = [int(str(r["messages"][1]["content"]).split()[1]) for r in lines(tmp_path / "capture")]
    assert kept == list(range(30, 47))


def test_messages_of_refuses_what_is_not_a_chat() -> None:
    assert messages_of(b"not json") is None
    assert messages_of(b'{"prompt": "x"}') is None
    assert messages_of(b'{"messages": [{"content": "no role"}]}') is None
    parts = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}]
    }
    assert messages_of(json.dumps(parts).encode()) == [{"role": "user", "content": "a"}]
    named = {"messages": [{"role": "user", "content": "x", "name": "alice", "tool_calls": []}]}
    assert messages_of(json.dumps(named).encode()) == [{"role": "user", "content": "x"}]


def test_a_torn_last_line_is_cut_and_the_file_finished(tmp_path: Path) -> None:
    part = tmp_path / "pod-a.00000000.jsonl.part"
    part.write_bytes(b'{"messages":[]}\n{"messages":[{"ro')
    done = recover_part(part)
    assert done is not None and done.name == "pod-a.00000000.jsonl"
    assert done.read_bytes() == b'{"messages":[]}\n' and not part.exists()
    empty = tmp_path / "pod-a.00000001.jsonl.part"
    empty.write_bytes(b'{"mess')
    assert recover_part(empty) is None and not empty.exists()


def test_kill_9_mid_capture_leaves_readable_files_and_a_restart_finishes_them(tmp_path: Path) -> None:
    """The real CLI in its own process, killed with SIGKILL while it captures under load."""
    from kubecluster.procs import free_port

    directory = tmp_path / "capture"

    async def load(url: str, stop: asyncio.Event, sent: list[int]) -> None:
        async with aiohttp.ClientSession() as s:
            i = 0
            while not stop.is_set():
                try:
                    async with s.post(f"{url}/v1/chat/completions", json=chat(i)) as resp:
                        await resp.read()
                    sent.append(i)
                except aiohttp.ClientError:
                    return
                i += 1

    async def scenario() -> int:
        stub = OpenAIStub()
        upstream = await stub.serve()
        port = free_port()
        argv = [
            sys.executable, "-m", "speculators_core.cli", "capture-proxy",
            "--listen", f"127.0.0.1:{port}",
            "--upstream", f"http://127.0.0.1:{upstream.sockets[0].getsockname()[1]}",
            "--dir", str(directory), "--sample-rate", "1", "--records-per-file", "50", "--prefix", "pod-a",
        ]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert "capture-proxy:" in await asyncio.to_thread(proc.stdout.readline)  # serving
            stop, sent = asyncio.Event(), []
            task = asyncio.create_task(load(f"http://127.0.0.1:{port}", stop, sent))
            while len([p for p in directory.glob("*.jsonl")]) < 2:  # under load, two files rotated
                await asyncio.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            stop.set()
            await task
            return len(sent)
        finally:
            if proc.poll() is None:
                proc.kill()
            upstream.close()

    sent = asyncio.run(scenario())
    for path in directory.iterdir():  # whatever the kill left, every whole line parses
        for line in path.read_bytes().split(b"\n")[:-1]:
            json.loads(line)
    writer = CaptureWriter(directory, "pod-a")
    writer.start()  # a restart recovers the torn file and goes on after it
    writer.close()
    assert not list(directory.glob("*.part"))
    kept = [int(str(r["messages"][1]["content"]).split()[1]) for r in lines(directory)]
    assert (
        kept == list(range(len(kept))) and len(kept) >= 100 and len(kept) <= sent + 1
    )  # + the one answered as the kill cut the client off


def test_a_capture_directory_reads_as_a_dataset_of_open_ended_prompts(tmp_path: Path) -> None:
    from speculators_core.data.loading import DataSourceError, iter_rows

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataSourceError, match="no file is finished yet"):
        list(iter_rows(str(empty)))
    directory = tmp_path / "capture"
    writer = CaptureWriter(directory, "pod-a", records_per_file=2)
    writer.start()
    for i in range(3):
        writer.submit(record_line([{"role": "user", "content": f"question {i}"}]))
    assert writer.flush()
    # The open .part file is not read; the finished one is, in order.
    rows = list(iter_rows(str(directory), open_ended=True))
    assert [r.messages for r in rows] == [
        [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": ""}] for i in range(2)
    ]
    # Without regeneration a prompt alone trains nothing: skipped, with the reason counted.
    assert [r.skip for r in iter_rows(str(directory))] == ["no_assistant_turn"] * 2
    writer.close()


@aio
async def test_expect_100_continue_gets_its_go_ahead_and_interim_responses_pass(tmp_path: Path) -> None:
    """curl's `Expect: 100-continue` for bodies over 1 KiB: the proxy answers it at once (no 1 s stall),
    vLLM gets the request without it, and the capture still sees the body."""
    async with proxied(tmp_path) as (url, stub, _, writer):
        port = int(url.rsplit(":", 1)[1])
        reader, w = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps(chat(7, padding="x" * 2000)).encode()
        w.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        await w.drain()
        go_ahead = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert go_ahead == b"HTTP/1.1 100 Continue\r\n\r\n"
        w.write(body)
        await w.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert head.startswith(b"HTTP/1.1 200")
        w.close()
        assert writer.flush()
    assert json.loads(stub.bodies[0]) == chat(7, padding="x" * 2000)
    assert b"expect" not in stub.heads[0].lower()  # answered by the proxy, not passed on
    assert lines(tmp_path / "capture") == [{"messages": chat(7)["messages"]}]
