"""A lean HTTP/1.1 client for engines on loopback: pooled keep-alive connections, streamed bodies.

General clients (httpx, tornado's) cost about a millisecond per request on a small machine;
the gateway's whole budget is that. Engines are known, local HTTP/1.1 servers, so this
client only does what they need: one request per connection at a time, Content-Length or
chunked bodies (or read-to-close), keep-alive reuse honouring the server's `Keep-Alive:
timeout=, max=` and a single retry when a reused connection turns out to be closed before
any byte of the answer arrived.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from tornado import httputil
from tornado.iostream import IOStream, StreamClosedError

MAX_HEAD_BYTES = 64 * 1024
READ_CHUNK = 64 * 1024
IDLE_EXPIRY_S = 4.0  # below the usual 5 s keep-alive of llama.cpp's and uvicorn's servers


class UpstreamError(Exception):
    """The engine could not be reached, or broke the protocol."""


class UpstreamTimeout(UpstreamError):
    """The engine did not answer in time."""


@dataclass
class Connection:
    """One keep-alive connection to an engine."""

    stream: IOStream
    key: tuple[str, int]
    idle_since: float = field(default_factory=time.monotonic)
    requests_left: int | None = None  # from the server's Keep-Alive: max=N
    server_idle_timeout: float | None = None

    def reusable(self, now: float) -> bool:
        if self.stream.closed() or self.requests_left == 0:
            return False
        limit = IDLE_EXPIRY_S if self.server_idle_timeout is None else min(IDLE_EXPIRY_S, self.server_idle_timeout - 0.5)
        return now - self.idle_since < limit


async def read_with_deadline(stream: IOStream, future: asyncio.Future[bytes], timeout: float) -> bytes:
    """Await an IOStream read, closing the stream after `timeout` s without data.

    A timer per read, not asyncio.wait_for: that wraps every read in a task, which is most of
    the gateway's per-request cost on a small machine. Data already buffered skips the timer.
    """
    if future.done():
        return future.result()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        stream.close()

    handle = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        return await future
    except StreamClosedError:
        if expired:
            raise UpstreamTimeout(f"no data from the engine for {timeout:g} s") from None
        raise
    finally:
        handle.cancel()


class UpstreamResponse:
    """Status, headers and a body to stream; `close()` drops the connection (the engine sees it)."""

    def __init__(self, pool: UpstreamPool, conn: Connection, method: str, status: int, reason: str,
                 headers: httputil.HTTPHeaders, read_timeout: float):
        self._pool = pool
        self._conn = conn
        self._method = method
        self.status = status
        self.reason = reason
        self.headers = headers
        self._read_timeout = read_timeout
        self._done = False

    def _has_body(self) -> bool:
        return not (self._method == "HEAD" or self.status in (204, 304) or 100 <= self.status < 200)

    async def _read(self, future: asyncio.Future[bytes]) -> bytes:
        return await read_with_deadline(self._conn.stream, future, self._read_timeout)

    async def iter_body(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked framing removed); the connection returns to the pool at the end."""
        stream = self._conn.stream
        reusable = self.headers.get("Connection", "").lower() != "close"
        try:
            if not self._has_body():
                pass
            elif "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                while True:
                    size_line = await self._read(stream.read_until(b"\r\n", max_bytes=1024))
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                    if size == 0:
                        while (await self._read(stream.read_until(b"\r\n", max_bytes=MAX_HEAD_BYTES))) != b"\r\n":
                            pass  # trailers
                        break
                    data = await self._read(stream.read_bytes(size + 2))
                    yield data[:-2]
            elif "Content-Length" in self.headers:
                remaining = int(self.headers["Content-Length"])
                while remaining > 0:
                    data = await self._read(stream.read_bytes(min(remaining, READ_CHUNK), partial=True))
                    remaining -= len(data)
                    yield data
            else:
                reusable = False
                while True:
                    try:
                        data = await self._read(stream.read_bytes(READ_CHUNK, partial=True))
                    except StreamClosedError:
                        break
                    yield data
        except StreamClosedError as exc:
            self.close()
            raise UpstreamError("the engine closed the connection mid-answer") from exc
        except (ValueError, UpstreamError):
            self.close()
            raise
        self._done = True
        if reusable:
            self._pool.release(self._conn)
        else:
            self.close()

    def close(self) -> None:
        """Drop the connection (a stream the client abandoned must not be reused)."""
        if not self._done:
            self._done = True
        self._conn.stream.close()


class UpstreamPool:
    """Idle keep-alive connections per (host, port)."""

    def __init__(self, *, connect_timeout: float = 10.0, max_idle_per_host: int = 64):
        self.connect_timeout = connect_timeout
        self.max_idle_per_host = max_idle_per_host
        self._idle: dict[tuple[str, int], deque[Connection]] = {}

    async def _connect(self, key: tuple[str, int]) -> Connection:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = IOStream(sock, max_buffer_size=64 * 1024 * 1024)
        try:
            await asyncio.wait_for(stream.connect(key), self.connect_timeout)
        except asyncio.TimeoutError:
            stream.close()
            raise UpstreamTimeout(f"connecting to the engine took over {self.connect_timeout:g} s") from None
        except (StreamClosedError, OSError) as exc:
            stream.close()
            raise UpstreamError(f"the engine is not reachable at {key[0]}:{key[1]}") from exc
        return Connection(stream=stream, key=key)

    def _take_idle(self, key: tuple[str, int]) -> Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # most recently used first: the least likely to have expired
            if conn.reusable(now):
                return conn
            conn.stream.close()
        return None

    def release(self, conn: Connection) -> None:
        """Put a connection whose answer was read completely back in the pool."""
        if conn.requests_left is not None:
            conn.requests_left -= 1
        conn.idle_since = time.monotonic()
        idle = self._idle.setdefault(conn.key, deque())
        if conn.reusable(conn.idle_since) and len(idle) < self.max_idle_per_host:
            idle.append(conn)
        else:
            conn.stream.close()

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.stream.close()
        self._idle.clear()

    async def request(
        self, host: str, port: int, method: str, target: str, headers: list[tuple[str, str]], body: bytes,
        *, timeout: float,
    ) -> UpstreamResponse:
        """Send a request and read the answer's head; the body is read through `iter_body()`."""
        key = (host, port)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        for attempt in range(2):
            conn = self._take_idle(key)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key)
            try:
                await conn.stream.write(payload)
                head = await read_with_deadline(
                    conn.stream, conn.stream.read_until(b"\r\n\r\n", max_bytes=MAX_HEAD_BYTES), timeout
                )
            except StreamClosedError:
                conn.stream.close()
                if reused and attempt == 0:
                    continue  # the server had closed the idle connection: nothing was processed
                raise UpstreamError("the engine closed the connection") from None
            return self._parse_head(conn, method, head, timeout)
        raise UpstreamError("the engine closed the connection")  # pragma: no cover - loop always returns

    def _parse_head(self, conn: Connection, method: str, head: bytes, timeout: float) -> UpstreamResponse:
        text = head.decode("latin-1")
        status_line, _, rest = text.partition("\r\n")
        try:
            version, code, reason = httputil.parse_response_start_line(status_line)
        except httputil.HTTPInputError as exc:
            conn.stream.close()
            raise UpstreamError(f"the engine answered something that is not HTTP: {status_line[:80]!r}") from exc
        headers = httputil.HTTPHeaders.parse(rest)
        keep_alive = headers.get("Keep-Alive", "")
        for part in keep_alive.split(","):
            name, _, value = part.strip().partition("=")
            if name == "max" and value.isdigit():
                conn.requests_left = int(value)
            elif name == "timeout" and value.isdigit():
                conn.server_idle_timeout = float(value)
        if version == "HTTP/1.0" and "keep-alive" not in headers.get("Connection", "").lower():
            headers["Connection"] = "close"
        return UpstreamResponse(self, conn, method, code, reason, headers, timeout)
