"""A stand-in for vLLM's OpenAI server (no GPU here): answers chat completions, plain or streamed (SSE,
chunked), as fast as asyncio can — the floor against which the capture proxy's added latency is measured.

`gate`, when set, holds a streamed answer after its first event until the test sets it: proof that the
proxy relays events as they come instead of buffering the response.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field

ANSWER = {
    "id": "chatcmpl-stub",
    "object": "chat.completion",
    "model": "model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
}


@dataclass
class OpenAIStub:
    gate: asyncio.Event | None = None
    status: int = 200
    heads: list[bytes] = field(default_factory=list)  # request heads as received
    bodies: list[bytes] = field(default_factory=list)  # request bodies as received
    responses: list[bytes] = field(default_factory=list)  # what was sent, byte for byte

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                self.heads.append(head)
                lines = head.decode("latin-1").split("\r\n")
                method = lines[0].split(" ")[0]
                headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.bodies.append(body)
                stream = False
                if body:
                    with contextlib.suppress(ValueError):
                        stream = bool(json.loads(body).get("stream"))
                if stream and method == "POST":
                    await self._stream(writer)
                else:
                    payload = json.dumps(ANSWER if method == "POST" else {"object": "list", "data": []})
                    out = (
                        f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(payload)}\r\n\r\n{payload}"
                    ).encode()
                    self.responses.append(out)
                    writer.write(out)
                    await writer.drain()
        finally:
            writer.close()

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        sent = [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"]
        writer.write(sent[0])
        for i, word in enumerate(("hel", "lo", "[DONE]")):
            event = f"data: {json.dumps({'delta': word})}\n\n".encode()
            chunk = f"{len(event):x}\r\n".encode() + event + b"\r\n"
            writer.write(chunk)
            sent.append(chunk)
            await writer.drain()
            if i == 0 and self.gate is not None:
                await self.gate.wait()
        writer.write(b"0\r\n\r\n")
        sent.append(b"0\r\n\r\n")
        await writer.drain()
        self.responses.append(b"".join(sent))

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
        return await asyncio.start_server(self.handle, host, port)
