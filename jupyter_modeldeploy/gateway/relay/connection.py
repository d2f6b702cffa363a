"""The gateway worker's HTTP/1.1 connections: llhttp (httptools) framing, each request an `EndpointExchange`.

The worker serves only endpoint requests, all alike, so it needs no web framework: a connection
parses requests with llhttp, runs each through the one `exchange.EndpointExchange` (the handler
tornado runs in the Jupyter server, over this process's `WorkerGateway`), and writes the answer
through `ConnectionWire` straight to the transport. Requests on a connection are answered in
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
import re
import socket
from collections.abc import Callable
from typing import Any, cast

import httptools

from ..admission import RequestHead
from ..exchange import EndpointExchange, WireFlags
from ..header_index import HeaderIndex
from ..response_head import http_date
from .worker_gateway import WorkerGateway

log = logging.getLogger("jupyter_modeldeploy.gateway_worker")

MAX_HEAD_BYTES = 64 * 1024  # tornado's default too: a longer request line and headers get 431
MAX_BUFFERED_BODY = 1 << 20  # reading pauses while this much of a body waits for its request's admission
ENDPOINTS = "/modeldeploy/endpoints/"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NO_BODY_STATUSES = frozenset({204, 304})

GiveBack = Callable[[socket.socket, bytes], None]


class ConnectionWire(WireFlags):
    """One answer, written to the connection: the head at the first flush or at the finish, a body of unknown
    length chunked (HTTP/1.1) or ended by closing (HTTP/1.0)."""

    def __init__(self, connection: EndpointConnection, method: str, http_11: bool, keep_alive: bool):
        self._connection = connection
        self._head_only = method == "HEAD"
        self._http_11 = http_11
        self.keep_alive = keep_alive  # False: the connection ends with this answer
        self._chunked = False
        self._finished = False
        self._headers_written = False
        self.clear()

    # What the exchange calls (tornado's RequestHandler names) --------------------------------

    def clear(self) -> None:
        """A fresh answer: 200, the default headers, no body."""
        self._status = 200
        self._reason: str | None = None
        self._headers: dict[str, list[tuple[str, str]]] = {
            "content-type": [("Content-Type", "text/html; charset=UTF-8")], "date": [("Date", http_date())]}
        self._buffer: list[bytes] = []

    def set_status(self, status_code: int, reason: str | None = None) -> None:
        self._status, self._reason = status_code, reason

    def get_status(self) -> int:
        return self._status

    def set_header(self, name: str, value: Any) -> None:
        self._headers[name.lower()] = [(name, _header_value(value))]

    def add_header(self, name: str, value: Any) -> None:
        self._headers.setdefault(name.lower(), []).append((name, _header_value(value)))

    def clear_header(self, name: str) -> None:
        self._headers.pop(name.lower(), None)

    def send(self, chunk: bytes) -> None:
        if chunk:
            self._buffer.append(chunk)

    async def flush(self) -> None:
        """Send what was written so far; waits while the client reads slower than the answer comes."""
        if self._finished:
            return
        self._connection.write(self._take(final=False))
        await self._connection.drained()

    def finish(self) -> None:
        """Send the rest and end the answer (the exchange calls it once the request is counted)."""
        if self._finished:
            return
        rest = self._take(final=True)
        self._finished = True
        self._connection.write(rest)

    def abort(self) -> None:
        """End the connection without a clean end of body: a cut answer must look cut."""
        self._finished = True
        self.keep_alive = False
        self._connection.abort()

    # Framing -----------------------------------------------------------------------------

    def _take(self, *, final: bool) -> bytes:
        body = b"".join(self._buffer)
        self._buffer.clear()
        out = b""
        if not self._headers_written:
            out = self._head(body, final)
            self._headers_written = True
        if self._head_only or self._status in NO_BODY_STATUSES:
            return out
        if self._chunked:
            if body:
                out += b"%x\r\n%s\r\n" % (len(body), body)
            if final:
                out += b"0\r\n\r\n"
            return out
        return out + body

    def _head(self, body: bytes, final: bool) -> bytes:
        headers = self._headers
        status = self._status
        if status in NO_BODY_STATUSES:
            for name in ("content-type", "content-length", "transfer-encoding"):
                headers.pop(name, None)
        elif "content-length" not in headers:
            if final:
                headers["content-length"] = [("Content-Length", str(len(body)))]
            elif self._http_11:
                self._chunked = True
                headers["transfer-encoding"] = [("Transfer-Encoding", "chunked")]
            else:
                self.keep_alive = False  # HTTP/1.0 and no length: the body ends where the connection does
        if headers.get("connection", [("", "")])[0][1].lower() == "close":
            self.keep_alive = False
        if not self.keep_alive:
            headers["connection"] = [("Connection", "close")]
        elif not self._http_11:
            headers["connection"] = [("Connection", "keep-alive")]
        reason = self._reason or http.client.responses.get(status, "Unknown")
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{name}: {value}" for pairs in headers.values() for name, value in pairs]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _header_value(value: Any) -> str:
    text = str(value)
    if _CONTROL.search(text):
        raise ValueError(f"unsafe header value {text[:80]!r}")
    return text


class _Request:
    """A request read off the connection: its head, the body pieces not yet taken, whether it is complete."""

    __slots__ = ("body", "complete", "expect_continue", "head", "headers", "http_11", "keep_alive", "size")

    def __init__(self, head: RequestHead, headers: HeaderIndex, http_11: bool, keep_alive: bool):
        self.head, self.headers, self.http_11, self.keep_alive = head, headers, http_11, keep_alive
        self.body: list[bytes] = []
        self.size = 0
        self.complete = False
        self.expect_continue = (headers.get("Expect") or "").lower() == "100-continue"


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
        if self._serving is None:
            self._serving = self._loop.create_task(self._serve())

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
            self._wake()

    # Serving -----------------------------------------------------------------------------

    async def _serve(self) -> None:
        try:
            while self._requests and not self._closed:
                request = self._requests[0]
                if not await self._serve_one(request):
                    self._close()
                    return
                self._requests.popleft()
                if self._paused and len(self._requests) <= 1:
                    self._resume()
            if self._failure is not None:
                self._error_answer(*self._failure)
        except Exception:  # never leave a client waiting on a broken request
            log.exception("an endpoint request failed in the gateway worker")
            self._close()
        finally:
            self._serving = None
            self._exchange = None

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
                if self._paused and len(self._requests) <= 1:
                    self._resume()
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
        if self._serving is None:
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
