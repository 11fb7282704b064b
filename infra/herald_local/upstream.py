"""A small HTTP/1.1 client for the AWS proxy's upstreams (dynalite, moto), which are on loopback.

Every DynamoDB call a function makes passes the proxy, 20-odd per WebSocket connect with its
join, so the proxy's cost per call bounds the local stack's connect rate. aiohttp's client
session spent about 19 % of the stack process's CPU on building, sending and reading those
calls (docs/local-stack.md, "Throughput"); this one writes the request line and headers itself,
reads the answer by its Content-Length (or chunks, or to the end of a closed connection), and
keeps each connection open for the next call where the upstream does (dynalite does; moto's
werkzeug server closes it after each answer).
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

# Idle connections kept per upstream; more are opened while more calls are in flight.
MAX_IDLE = 64
# A connection idle for longer is not reused: Node's HTTP server (dynalite) closes a kept
# connection after 5 idle seconds, and a request sent as it closes would be lost.
IDLE_SECONDS = 4.0


class UpstreamError(Exception):
    """The upstream closed or broke the connection before a whole answer."""


class Upstream:
    """Calls to one `http://host:port` base URL over kept connections."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http:// base URL: {base}")
        self.host, self.port = parts.hostname, parts.port or 80
        self._host_header = f"{self.host}:{self.port}".encode()
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def request(self, method: str, target: str, headers: list[tuple[str, str]],
                      body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body). A kept connection that turns out closed is retried once on a
        new one; a new connection's failure raises (OSError or UpstreamError)."""
        head = bytearray(f"{method} {target} HTTP/1.1\r\n".encode("latin-1"))
        head += b"Host: " + self._host_header + b"\r\n"
        for name, value in headers:
            head += f"{name}: {value}\r\n".encode("latin-1")
        head += b"Content-Length: %d\r\n\r\n" % len(body)
        while self._idle:
            reader, writer, since = self._idle.pop()
            if time.monotonic() - since > IDLE_SECONDS:
                writer.close()
                continue
            try:
                return await self._exchange(reader, writer, bytes(head), body)
            except (OSError, UpstreamError, asyncio.IncompleteReadError):
                writer.close()   # closed by the upstream while idle: try another
            except BaseException:
                writer.close()   # cancelled mid-answer: the connection is in no state to reuse
                raise
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            return await self._exchange(reader, writer, bytes(head), body)
        except asyncio.IncompleteReadError as exc:
            writer.close()
            raise UpstreamError("the upstream closed the connection mid-answer") from exc
        except BaseException:
            writer.close()
            raise

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        head: bytes, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        writer.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            writer.write(body)
        status_line = await reader.readline()
        if not status_line:
            raise UpstreamError("no answer")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise UpstreamError(f"not an HTTP answer: {status_line[:80]!r}")
        status = int(parts[1])
        keep = parts[0] == b"HTTP/1.1"
        out: list[tuple[str, str]] = []
        length: int | None = None
        chunked = False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise UpstreamError("the answer's headers were cut off")
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip(), value.strip()
            lower = name.lower()
            if lower == "content-length":
                length = int(value)
            elif lower == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif lower == "connection":
                keep = keep and value.lower() != "close" or value.lower() == "keep-alive"
            out.append((name, value))
        if chunked:
            payload = await _read_chunks(reader)
        elif length is not None:
            payload = await reader.readexactly(length)
        elif status in (204, 304) or 100 <= status < 200:
            payload = b""
        else:
            payload = await reader.read()
            keep = False
        if keep and len(self._idle) < MAX_IDLE:
            self._idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        return status, out, payload

    def close(self) -> None:
        while self._idle:
            self._idle.pop()[1].close()


async def _read_chunks(reader: asyncio.StreamReader) -> bytes:
    payload = bytearray()
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass   # trailers
            return bytes(payload)
        payload += await reader.readexactly(size)
        await reader.readexactly(2)
