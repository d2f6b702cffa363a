"""The gateway worker's HTTP/1.1 connections: llhttp (httptools) framing, each request an `EndpointExchange`.

The worker serves only endpoint requests, all alike, so it needs no web framework: a connection
parses requests with llhttp and answers a plain one (small, read whole, nothing to wait for) in
callbacks (`plain`), any other in a task by the one `exchange.EndpointExchange` (the handler
tornado runs in the Jupyter server, over this process's `WorkerGateway`), writing the answer
through `wire.ConnectionWire` straight to the transport. Requests on a connection are answered in
order; reading pauses while one waits, so a pipelining client cannot queue more than one.

A request outside the endpoints goes back to the Jupyter server on a connection it handed over
(`give_back`, with the bytes read since that request began), and gets a JSON 404 on the worker's
own doors.
"""

from __future__ import annotations

import asyncio
import collections
import http.client
import json
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any, cast

import httptools

from ..admission import DRAIN_LIMIT, RequestHead
from ..exchange import EndpointExchange
from ..header_index import HeaderIndex
from ..response_head import http_date
from . import plain
from .wire import ConnectionWire
from .worker_gateway import WorkerGateway

log = logging.getLogger("jupyter_modeldeploy.gateway_worker")

MAX_HEAD_BYTES = 64 * 1024  # tornado's default too: a longer request line and headers get 431
MAX_BUFFERED_BODY = 1 << 20  # reading pauses while this much of a body waits for its request's admission
ENDPOINTS = "/modeldeploy/endpoints/"

GiveBack = Callable[[socket.socket, bytes], None]


class _Request:
    """A request read off the connection: its head, the body pieces not yet taken, whether it is complete."""

    __slots__ = ("body", "complete", "expect_continue", "head", "headers", "http_11", "keep_alive", "plain", "size")

    def __init__(self, head: RequestHead, headers: HeaderIndex, http_11: bool, keep_alive: bool):
        self.head, self.headers, self.http_11, self.keep_alive = head, headers, http_11, keep_alive
        self.body: list[bytes] = []
        self.size = 0
        self.complete = False
        self.expect_continue = (headers.get("Expect") or "").lower() == "100-continue"
        # May be served plainly (`plain`): decided once read whole, so its body is small and nobody waits to send it.
        length = headers.get("Content-Length", "0")
        self.plain = ("Expect" not in headers and "Transfer-Encoding" not in headers and length.isdigit()
                      and int(length) <= DRAIN_LIMIT)


class EndpointConnection(asyncio.Protocol):
    """One client connection of the worker: see the module's docstring."""

    def __init__(self, gateway: WorkerGateway, door: str, base_url: str = "/", prefix: bytes = b"",
                 give_back: GiveBack | None = None):
        self.gateway = gateway
        self.door = door
        self._prefixes = tuple(dict.fromkeys([base_url.rstrip("/") + ENDPOINTS, ENDPOINTS]))
        self._prefix = prefix  # bytes read by the Jupyter server before it handed the connection over
        self._give_back = give_back
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._requests: collections.deque[_Request] = collections.deque()
        self._reading: _Request | None = None  # the request whose head or body the parser is in
        self._serving: asyncio.Task[None] | None = None
        self._exchange: EndpointExchange | None = None
        self._plain: plain.PlainRequest | None = None  # the plain request under way (no task serves meanwhile)
        self._more: asyncio.Future[None] | None = None  # set when body bytes arrive or the connection ends
        self._drain: asyncio.Future[None] | None = None
        self._paused = False
        self._write_paused = False
        self._closed = False
        self._url = b""
        self._pairs: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._boundary = True  # the last request ended with the bytes read so far
        self._raw: list[bytes] | None = None  # what was read since the request being parsed began (to give back)
        self._failure: tuple[int, str] | None = None  # unreadable bytes: answered after the requests before them

    # asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # (asyncio sets TCP_NODELAY on TCP transports itself)
        if self._prefix:
            prefix, self._prefix = self._prefix, b""
            self.data_received(prefix)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if self._give_back is not None:
            if self._boundary:
                self._raw = []
            if self._raw is not None:
                self._raw.append(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not served on endpoints")
        except httptools.HttpParserError as exc:  # a callback's own exception comes wrapped in one
            cause = exc.__context__
            if isinstance(cause, _HeadTooLarge):
                self._fail(431, f"request line and headers exceed {MAX_HEAD_BYTES} bytes")
            elif not isinstance(cause, _GivenBack):
                self._fail(400, f"malformed HTTP request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self._exchange is not None:
            self._exchange.connection_closed()
        if self._plain is not None:
            self._plain.client_gone()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # llhttp callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._boundary = False
        self._url = b""
        self._pairs = []
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow(len(name) + len(value) + 4)
        self._pairs.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        parser = self._parser
        raw = self._url
        if raw[:1] == b"/" and b"?" not in raw and b"#" not in raw:  # origin-form without a query: nothing to split
            path, query = raw.decode("latin-1"), ""
        else:
            url = httptools.parse_url(raw)
            path = url.path.decode("latin-1") if url.path else "/"
            query = url.query.decode("latin-1") if url.query else ""
        headers = HeaderIndex(self._pairs)
        if not path.startswith(self._prefixes) or path in self._prefixes:
            self._not_an_endpoint(headers)
            return
        http_11 = parser.get_http_version() == "1.1"
        head = RequestHead(parser.get_method().decode("latin-1"), path, query, headers)
        request = _Request(head, headers, http_11, parser.should_keep_alive())
        self._raw = None  # an endpoint's: nothing to give back
        self._reading = request
        self._requests.append(request)
        if not request.plain and self._idle():
            self._dispatch()  # admitted from its head while its body comes

    def on_body(self, body: bytes) -> None:
        request = self._reading
        if request is None:
            return
        request.body.append(body)
        request.size += len(body)
        if request.size > MAX_BUFFERED_BODY and not self._paused:
            self._pause()
        self._wake()

    def on_message_complete(self) -> None:
        self._boundary = True
        request, self._reading = self._reading, None
        if request is not None:
            request.complete = True
            if len(self._requests) > 1:
                self._pause()  # a pipelined request waits for the one before: read no further meanwhile
            if self._idle() and self._requests[0] is request:
                self._dispatch()
            else:
                self._wake()

    # Serving -----------------------------------------------------------------------------

    def _idle(self) -> bool:
        """Nothing serves a request of this connection now."""
        return self._serving is None and self._plain is None and not self._closed

    def _dispatch(self) -> None:
        """Serve the first request waiting: plainly when it can be (`plain`), else in a task, by an exchange."""
        request = self._requests[0]
        if request.complete and request.plain and self.gateway.config.plain_requests:
            try:
                self._plain = plain.start(self, self.gateway, request.head, request.headers, b"".join(request.body),
                                          self.door, request.http_11, request.keep_alive)
            except Exception:  # never leave a client waiting on a broken request
                log.exception("a plain request failed in the gateway worker")
                self.abort()
                return
            if self._plain is not None:
                return
        self._serving = self._loop.create_task(self._serve())

    def plain_done(self, keep_alive: bool) -> None:
        """The plain request was answered: the next one is served, or the connection ends."""
        self._plain = None
        self._requests.popleft()
        if not keep_alive or self._closed:
            self._close()
            return
        self._next()

    def plain_failed(self) -> None:
        """The plain request broke (logged): the connection ends, as it does when a task's request breaks."""
        self._plain = None
        self.abort()

    def plain_adopted(self, exchange: EndpointExchange, answer: Coroutine[Any, Any, None]) -> None:
        """The plain request's answer was not plain: an exchange goes on with it, in a task."""
        self._plain = None
        self._exchange = exchange
        self._serving = self._loop.create_task(self._serve((exchange, answer)))

    def _next(self) -> None:
        """After an answer: resume reading, then serve the next request (once read whole, if it may be plain)."""
        self._read_on()
        if self._requests:
            first = self._requests[0]
            if first.complete or not first.plain:
                self._dispatch()
        elif self._failure is not None:
            self._error_answer(*self._failure)

    async def _serve(self, adopted: tuple[EndpointExchange, Coroutine[Any, Any, None]] | None = None) -> None:
        try:
            if adopted is not None:
                exchange, answer = adopted
                await answer
                if not self._answered(exchange):
                    return
            while self._requests and not self._closed:
                if not await self._serve_one(self._requests[0]):
                    self._close()
                    return
                if not self._answered(None):
                    return
            if self._failure is not None:
                self._error_answer(*self._failure)
        except Exception:  # never leave a client waiting on a broken request
            log.exception("an endpoint request failed in the gateway worker")
            self._close()
        finally:
            self._serving = None
            self._exchange = None

    def _answered(self, exchange: EndpointExchange | None) -> bool:
        """The first request was answered (by `exchange`, or `_serve_one` said the connection goes on): False when
        the connection ends with it."""
        if exchange is not None and not (cast(ConnectionWire, exchange.wire).keep_alive and not self._closed):
            self._close()
            return False
        self._requests.popleft()
        self._read_on()
        return True

    async def _serve_one(self, request: _Request) -> bool:
        """Answer one request; False when the connection ends with it."""
        wire = ConnectionWire(self, request.head.method, request.http_11, request.keep_alive)
        exchange = self._exchange = EndpointExchange(self.gateway, wire, request.head, request.headers, self.door)
        await exchange.admit_head()
        if request.expect_continue and not wire.finished:
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while True:
            if request.body:
                pieces, request.body, request.size = request.body, [], 0
                for piece in pieces:
                    exchange.receive(piece)
                self._read_on()
            if wire.finished and not wire.keep_alive:
                return False  # refused before its body was read: the connection ends
            if request.complete:
                break
            if self._closed or self._failure is not None:
                exchange.connection_closed()  # its body never came whole
                return False
            self._more = self._loop.create_future()
            await self._more
        await exchange.answer()
        return wire.keep_alive and not self._closed

    # Transport ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Bytes to the client, in order (dropped once the connection is gone)."""
        if data and not self._closed and self._transport is not None:
            self._transport.write(data)

    async def drained(self) -> None:
        """Wait while the client reads slower than the answer is written."""
        if self._write_paused and not self._closed:
            self._drain = self._loop.create_future()
            await self._drain

    def abort(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    def _close(self) -> None:
        """End the connection after what was written."""
        if not self._closed and self._transport is not None:
            self._closed = True
            self._transport.close()

    def _wake(self) -> None:
        if self._more is not None and not self._more.done():
            self._more.set_result(None)

    def _pause(self) -> None:
        if self._transport is not None and not self._paused:
            self._paused = True
            self._transport.pause_reading()

    def _read_on(self) -> None:
        """Read again once at most one request waits (reading paused behind a pipelined one, or a large body)."""
        if self._paused and len(self._requests) <= 1:
            self._resume()

    def _resume(self) -> None:
        if self._transport is not None and self._paused and not self._closed:
            self._paused = False
            self._transport.resume_reading()

    def _grow(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _HeadTooLarge

    def _fail(self, status: int, message: str) -> None:
        """Bytes that cannot be read as a request: a JSON error and the connection ends, after the answers of the
        complete requests before them."""
        if self._serving is None and self._plain is None:
            self._error_answer(status, message)
            return
        self._failure = (status, message)
        self._pause()
        self._wake()

    def _error_answer(self, status: int, message: str) -> None:
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": status}}).encode()
        reason = http.client.responses.get(status, "Error")
        self.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                   f"Date: {http_date()}\r\nConnection: close\r\n\r\n".encode() + body)
        self._requests.clear()
        self._close()

    def _not_an_endpoint(self, headers: HeaderIndex) -> None:
        """On a connection the server handed over, the connection goes back to it with this request's bytes (it
        serves it from this request on); on a door, or when those bytes are not known, a JSON 404."""
        raw, self._raw = self._raw, None
        if self._give_back is None or raw is None or self._requests or self._transport is None:
            self._fail(404, "not an endpoint: /modeldeploy/endpoints/<route>/...")
            raise _GivenBack
        sock = self._transport.get_extra_info("socket")
        duplicate = socket.socket(sock.family, sock.type, sock.proto, fileno=socket.dup(sock.fileno()))
        self._closed = True
        self._transport.abort()  # this process's copy only: the connection lives on in the server
        self._give_back(duplicate, b"".join(raw))
        raise _GivenBack


class _GivenBack(Exception):
    """Stops parsing: the connection is not this process's any more (or ends)."""


class _HeadTooLarge(Exception):
    """The request line and headers are past MAX_HEAD_BYTES."""
