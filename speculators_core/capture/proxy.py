"""A minimal HTTP/1.1 reverse proxy (asyncio streams) that passes every byte through unchanged and hands the
body of sampled, successful chat-completion requests to a CaptureWriter.

One upstream connection per client connection, kept alive as long as both sides keep theirs; responses are
relayed as they arrive (Content-Length, chunked or until close), so streamed (SSE) answers stream through.
Only the request body is looked at, and only after the response succeeded; headers are never kept.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from speculators_core.capture.records import (
    CAPTURED_PATHS,
    NO_CAPTURE_HEADER,
    Sampler,
    messages_of,
    record_line,
)
from speculators_core.capture.writer import CaptureWriter

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
MAX_CAPTURED_BODY = 4 * 1024 * 1024  # bigger requests pass through but are not kept
HEALTH_PATH = "/capture/healthz"


class ProtocolError(Exception):
    pass


@dataclass
class Head:
    raw: bytes
    first: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names; last one wins

    @classmethod
    def parse(cls, raw: bytes) -> Head:
        try:
            text = raw.decode("latin-1")
        except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
            raise ProtocolError(str(exc)) from None
        lines = text.split("\r\n")
        head = cls(raw, lines[0])
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"malformed header line {line[:80]!r}")
            head.headers[name.strip().lower()] = value.strip()
        return head

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    @property
    def length(self) -> int | None:
        value = self.headers.get("content-length")
        if value is None:
            return None
        if not value.isdigit():
            raise ProtocolError(f"bad Content-Length {value!r}")
        return int(value)

    def wants_close(self, version: str) -> bool:
        conn = self.headers.get("connection", "").lower()
        return "close" in conn or (version == "HTTP/1.0" and "keep-alive" not in conn)


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("connection closed inside a message head") from None
        return None  # a clean close between requests
    except asyncio.LimitOverrunError:
        raise ProtocolError("message head too large") from None


async def _relay_body(
    head: Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, keep: bool, until_close: bool
) -> bytes | None:
    """Copy a message body from reader to writer as it arrives; returns the decoded body when `keep`."""
    kept: list[bytes] | None = [] if keep else None
    size = 0

    def hold(data: bytes) -> None:
        nonlocal kept, size
        if kept is not None:
            size += len(data)
            if size > MAX_CAPTURED_BODY:
                kept = None
            else:
                kept.append(data)

    if head.chunked:
        while True:
            line = await reader.readuntil(b"\r\n")
            writer.write(line)
            n = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if n == 0:
                while True:  # trailers, then the empty line
                    trailer = await reader.readuntil(b"\r\n")
                    writer.write(trailer)
                    if trailer == b"\r\n":
                        break
                break
            chunk = await reader.readexactly(n + 2)
            writer.write(chunk)
            hold(chunk[:-2])
            await writer.drain()
    elif head.length is not None:
        left = head.length
        while left > 0:
            data = await reader.read(min(left, 65536))
            if not data:
                raise ProtocolError("connection closed inside a body")
            left -= len(data)
            writer.write(data)
            hold(data)
            if left:
                await writer.drain()
    elif until_close:
        while data := await reader.read(65536):
            writer.write(data)
            hold(data)
            await writer.drain()
    await writer.drain()
    return b"".join(kept) if kept is not None else None


def _without_header(raw: bytes, name: bytes) -> bytes:
    """A message head without the header `name` (lower-case)."""
    lines = raw.split(b"\r\n")
    kept = [lines[0], *(ln for ln in lines[1:] if ln.split(b":", 1)[0].strip().lower() != name)]
    return b"\r\n".join(kept)


def _no_body(method: str, status: int) -> bool:
    return method == "HEAD" or 100 <= status < 200 or status in (204, 304)


class CaptureProxy:
    """Serve on a port, forward to upstream host:port, capture sampled chat requests."""

    def __init__(
        self, upstream_host: str, upstream_port: int, writer: CaptureWriter | None, sampler: Sampler
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.writer = writer
        self.sampler = sampler
        self.requests = 0
        self.captured = 0

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                raw = await _read_head(client_r)
                if raw is None:
                    return
                req = Head.parse(raw)
                method, target, version = [*req.first.split(" "), "", "", ""][:3]
                if target == HEALTH_PATH:
                    client_w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await client_w.drain()
                    continue
                path = target.split("?", 1)[0]
                sample = (
                    method == "POST"
                    and path in CAPTURED_PATHS
                    and req.headers.get(NO_CAPTURE_HEADER.lower(), "").lower() != "off"
                    and self.sampler.keep()
                )
                if up is None:
                    try:
                        up = await asyncio.open_connection(*self.upstream)
                    except OSError as exc:
                        body = f"capture proxy: upstream unavailable: {exc}".encode()
                        client_w.write(
                            b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n"
                            + f"Content-Length: {len(body)}\r\n\r\n".encode()
                            + body
                        )
                        await client_w.drain()
                        return
                up_r, up_w = up
                if "100-continue" in req.headers.get("expect", "").lower():
                    # curl sends this for bodies over 1 KiB and waits up to a second for the go-ahead: the
                    # proxy gives it (it reads the body before forwarding) and does not pass it on.
                    client_w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await client_w.drain()
                    raw = _without_header(raw, b"expect")
                up_w.write(raw)
                body = await _relay_body(req, client_r, up_w, keep=sample, until_close=False)
                while True:
                    resp_raw = await _read_head(up_r)
                    if resp_raw is None:
                        raise ProtocolError("upstream closed before answering")
                    resp = Head.parse(resp_raw)
                    parts = resp.first.split(" ", 2)
                    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
                    client_w.write(resp_raw)
                    if not 100 <= status < 200 or status == 101:
                        break  # interim responses (102, 103) are relayed; the final one follows
                close_after = req.wants_close(version) or resp.wants_close(parts[0])
                if not _no_body(method, status):
                    framed = resp.chunked or resp.length is not None
                    await _relay_body(resp, up_r, client_w, keep=False, until_close=not framed)
                    close_after = close_after or not framed
                else:
                    await client_w.drain()
                self.requests += 1
                if sample and body is not None and 200 <= status < 300 and self.writer is not None:
                    messages = messages_of(body)
                    if messages and self.writer.submit(record_line(messages)):
                        self.captured += 1
                if close_after:
                    return
        except (ProtocolError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            log.debug("capture proxy connection ended: %s", exc)
        finally:
            # close() without wait_closed(): a shutdown cancels these tasks, and there is nothing to wait for.
            client_w.close()
            if up is not None:
                up[1].close()

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self.handle, host, port, limit=MAX_HEAD)
