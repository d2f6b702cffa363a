"""The gateway's HTTP client to engines: llhttp (httptools) framing on pooled asyncio connections.

An engine is reached over a Unix socket in its private folder (or a replica's TCP port), with one
request shape: a head and a body already read. So the client is small: a pool of kept connections
per engine address, each an asyncio protocol whose llhttp parser frames the answer (interim 1xx
answers skipped, 204 / 304 and chunked bodies with trailers framed by the parser, a body without
a length ended by the close). The body streams to the caller as it arrives, and reading pauses
while the caller is behind. A connection goes back to the pool only after its answer was read to
the end (anything else closes it); the answer to a HEAD request has no body whatever its headers
say, so that connection is not kept.

One rule of our own: a request that fails on a *reused* kept connection before any byte of the
answer arrived (the engine had closed it as we sent) is sent once more, on a fresh connection.
Nothing else is retried.

(This replaced aiohttp's client: on the gateway's trivial route it cost 280 µs of CPU a request
against 80 µs here, on the same engine: bench/README.md.)
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from typing import cast

import httptools

from ..engines.base import EngineAddress
from .header_index import HeaderIndex

KEEPALIVE_S = 4.0  # below the 5 s keep-alive of llama.cpp's, uvicorn's and tornado's servers
PAUSE_AT_BYTES = 1 << 20  # reading from the engine pauses while this much of the answer waits for the client


class UpstreamError(Exception):
    """The engine could not be reached, or broke the protocol."""


class UpstreamUnreachable(UpstreamError):
    """No connection to the engine could be made: the request never reached it (another replica may take it)."""


class UpstreamNoAnswer(UpstreamError):
    """The engine accepted the connection and closed or reset it before the answer's head: no byte of an
    answer came (a replica or its node dying; another replica may take the request)."""


class UpstreamTimeout(UpstreamError):
    """The engine did not answer in time."""


class _Lost(UpstreamError):
    """The connection ended before the answer's head (on a reused connection: sent again)."""


class UpstreamResponse:
    """Status, headers and a body to stream; `close()` drops the connection (the engine sees it)."""

    def __init__(self, connection: _EngineConnection, status: int, reason: str, headers: HeaderIndex,
                 timeout: float):
        self._connection = connection
        self.status = status
        self.reason = reason
        self.headers = headers
        self._timeout = timeout
        self._read = False  # read to its end

    async def iter_body(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked framing removed); the connection goes back to the pool only once the
        body was read to its end."""
        connection = self._connection
        while True:
            chunk = await connection.next_chunk(self._timeout)
            if chunk is None:
                break
            yield chunk
        self._read = True
        connection.answered()

    def whole_body(self) -> bytes | None:
        """The whole body, when all of it has arrived (the connection goes back to the pool); None while some of it
        is still to come (nothing taken: `iter_body` reads it all)."""
        body = self._connection.whole_body()
        if body is not None:
            self._read = True
            self._connection.answered()
        return body

    def close(self) -> None:
        """Drop the connection: an answer not read to the end must never be reused."""
        self._connection.abort()

    def fail(self, reason: str) -> None:
        """Give the answer up (its engine went away): its reader gets an UpstreamError now, the connection is
        dropped. Nothing once the answer was read to its end (its connection may serve another by then)."""
        if not self._read:
            self._connection._fail(UpstreamError(reason))
            self._connection.abort()


class _EngineConnection(asyncio.Protocol):
    """One kept connection to an engine, and the answer it is reading."""

    def __init__(self, pool: list[_EngineConnection]):
        self.pool = pool  # where it goes while idle
        self._parser = httptools.HttpResponseParser(self)
        self.loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self.reused = False
        self.idle_since = 0.0
        self.closed = False
        self._head: asyncio.Future[UpstreamResponse] | None = None
        self._timeout = 0.0
        self._head_only = False
        self._seen_bytes = False
        self._status_text = b""
        self._headers: list[tuple[str, str]] = []
        self._interim = False
        self._headers_done = False
        self._framed = True  # the body's end is known from the answer (a length, chunks, or none by status)
        self._chunks: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._paused = False
        self._complete = False
        self._keep = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None

    # Sending -----------------------------------------------------------------------------

    def send(self, data: bytes, head_only: bool, timeout: float) -> asyncio.Future[UpstreamResponse]:
        """Write one request; the future holds the answer's head."""
        assert self._transport is not None
        self._head = self.loop.create_future()
        self._timeout, self._head_only = timeout, head_only
        self._seen_bytes = self._headers_done = self._complete = self._interim = False
        self._status_text, self._headers, self._error = b"", [], None
        self._framed = True
        self._transport.write(data)
        return self._head

    # asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._seen_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"the engine's answer is not valid HTTP ({type(exc).__name__})"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self in self.pool:
            self.pool.remove(self)
        if self._headers_done and not self._complete and not self._framed and self._error is None:
            self._complete = True  # a body without a length ends where the connection does
            self._wake()
            return
        if not self._complete:
            self._fail(_Lost("the engine closed the connection") if not self._seen_bytes
                       else UpstreamError("the engine broke off its answer (the connection ended)"))

    # llhttp callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._headers = []
        self._status_text = b""

    def on_status(self, status: bytes) -> None:
        self._status_text += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim = True  # `100 Continue` and the like: the answer follows
            return
        self._interim = False
        self._headers_done = True
        self._keep = self._parser.should_keep_alive() and not self._head_only
        headers = HeaderIndex(self._headers)
        self._framed = ("content-length" in headers or "transfer-encoding" in headers or status in (204, 304)
                        or self._head_only)
        head = self._head
        if head is not None and not head.done():
            head.set_result(UpstreamResponse(self, status, self._status_text.decode("latin-1"), headers,
                                             self._timeout))
        if self._head_only:
            self._complete = True  # no body, whatever Content-Length says

    def on_body(self, body: bytes) -> None:
        if self._head_only:
            return
        self._chunks.append(body)
        self._queued += len(body)
        if self._queued > PAUSE_AT_BYTES and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete = True
        self._wake()

    # Reading the body -----------------------------------------------------------------------

    async def next_chunk(self, timeout: float) -> bytes | None:
        """The next piece of the body, None at its end."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._queued -= len(chunk)
                if self._paused and self._queued < PAUSE_AT_BYTES // 2 and self._transport is not None:
                    self._paused = False
                    self._transport.resume_reading()
                return chunk
            if self._error is not None:
                raise self._error
            if self._complete:
                return None
            self._waiter = self.loop.create_future()
            timer = self.loop.call_later(timeout, self._expire, self._waiter)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None

    def whole_body(self) -> bytes | None:
        """Every piece of a complete answer's body at once; None while the answer is not complete."""
        if not self._complete or self._error is not None:
            return None
        chunks, self._chunks, self._queued = self._chunks, collections.deque(), 0
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return b"".join(chunks)

    def answered(self) -> None:
        """The answer was read to its end: back to the pool, or closed."""
        if self._keep and not self.closed and self._complete:
            self.reused = True
            self.idle_since = time.monotonic()
            self.pool.append(self)
        else:
            self.abort()

    def abort(self) -> None:
        """Drop the connection."""
        self._keep = False
        if not self.closed and self._transport is not None:
            self.closed = True
            if self in self.pool:
                self.pool.remove(self)
            self._transport.abort()

    def _expire(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(UpstreamTimeout("the engine stopped sending its answer"))
        self.abort()

    def _fail(self, error: UpstreamError) -> None:
        self._error = error
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class UpstreamClient:
    """A pool of kept connections per engine address."""

    def __init__(self, *, connect_timeout: float = 10.0):
        self.connect_timeout = connect_timeout
        self._pools: dict[EngineAddress, list[_EngineConnection]] = {}

    async def connect(self, address: EngineAddress, pool: list[_EngineConnection]) -> _EngineConnection:
        """A new connection to the engine, for `pool` once its first answer was read."""
        loop = asyncio.get_running_loop()
        try:
            if address.socket_path:
                opening = loop.create_unix_connection(lambda: _EngineConnection(pool), address.socket_path)
            else:
                opening = loop.create_connection(lambda: _EngineConnection(pool), address.host, address.port)
            _, connection = await asyncio.wait_for(opening, self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise UpstreamUnreachable(f"no connection to the engine ({type(exc).__name__})") from exc
        return connection

    def take_idle(self, address: EngineAddress) -> _EngineConnection | None:
        """A kept connection to the engine that is free now, taken from its pool (`send_kept` sends on it,
        `put_back` returns it unused); None when there is none."""
        pool = self._pools.get(address)
        return self._kept(pool) if pool else None

    def put_back(self, connection: _EngineConnection) -> None:
        """A connection `take_idle` gave, back in its pool unused."""
        connection.pool.append(connection)

    def _kept(self, pool: list[_EngineConnection]) -> _EngineConnection | None:
        now = time.monotonic()
        while pool:
            connection = pool.pop()
            if not connection.closed and now - connection.idle_since < KEEPALIVE_S:
                return connection
            connection.abort()
        return None

    def send_kept(
        self, address: EngineAddress, connection: _EngineConnection, method: str, target: str,
        headers: list[tuple[str, str]], body: bytes, *, timeout: float,
    ) -> PendingAnswer:
        """Send a request now on a kept connection `take_idle` gave."""
        return PendingAnswer(self, address, connection.pool, _request_bytes(address, method, target, headers, body),
                             method == "HEAD", timeout, connection)

    async def request(
        self, address: EngineAddress, method: str, target: str, headers: list[tuple[str, str]], body: bytes,
        *, timeout: float,
    ) -> UpstreamResponse:
        """Send a request and read the answer's head (interim 1xx skipped); stream the body with
        `iter_body()`. `target` is the normalised path and raw query, sent exactly as given."""
        data = _request_bytes(address, method, target, headers, body)
        pool = self._pools.setdefault(address, [])
        connection = self._kept(pool) or await self.connect(address, pool)
        return await PendingAnswer(self, address, pool, data, method == "HEAD", timeout, connection).answer()

    async def forget(self, address: EngineAddress) -> None:
        """Close the pool of an engine that stopped."""
        for connection in self._pools.pop(address, []):
            connection.abort()

    async def close(self) -> None:
        """Close every pool."""
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            for connection in list(pool):
                connection.abort()


class PendingAnswer:
    """A request written to an engine connection, its answer's head to come (`head`, a future a caller may also
    watch with callbacks). `answer()` waits for it; a request that the engine lost on a *reused* kept connection
    before any byte of the answer (it had closed the connection as we sent) is sent once more on a fresh one."""

    def __init__(self, client: UpstreamClient, address: EngineAddress, pool: list[_EngineConnection], data: bytes,
                 head_only: bool, timeout: float, connection: _EngineConnection):
        self._client, self._address, self._pool, self._data = client, address, pool, data
        self._head_only, self._timeout = head_only, timeout
        self._send(connection)

    def _send(self, connection: _EngineConnection) -> None:
        self._connection = connection
        self.head = connection.send(self._data, self._head_only, self._timeout)
        self._timer = connection.loop.call_later(self._timeout, _expire_head, self.head, connection, self._timeout)

    def settled(self) -> None:
        """The head was taken from `head` (no need to time it out any more)."""
        self._timer.cancel()

    async def answer(self) -> UpstreamResponse:
        """The answer's head (UpstreamError: it will not come)."""
        for attempt in (1, 2):
            try:
                return await self.head
            except _Lost as exc:
                if attempt == 1 and self._connection.reused:
                    self._timer.cancel()
                    self._send(await self._client.connect(self._address, self._pool))
                    continue  # the engine had closed the idle connection: nothing was processed
                raise UpstreamNoAnswer(f"the engine closed the connection before answering ({exc})") from exc
            finally:
                self._timer.cancel()
        raise UpstreamError("unreachable")  # pragma: no cover - the loop always returns or raises


def _request_bytes(address: EngineAddress, method: str, target: str, headers: list[tuple[str, str]],
                   body: bytes) -> bytes:
    host = "localhost" if address.socket_path else f"{address.host}:{address.port}"
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *(f"{name}: {value}" for name, value in headers)]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _expire_head(head: asyncio.Future[UpstreamResponse], connection: _EngineConnection, timeout: float) -> None:
    if not head.done():
        head.set_exception(UpstreamTimeout(f"no answer from the engine within {timeout:g} s"))
    connection.abort()
