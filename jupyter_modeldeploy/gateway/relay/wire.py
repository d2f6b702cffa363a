"""One answer of the gateway worker, written straight to its client connection.

`ConnectionWire` is the `exchange.Wire` of the worker's own HTTP/1.1 server (`connection`): the
head goes at the first flush or at the finish, a body of unknown length is chunked (HTTP/1.1) or
ended by closing (HTTP/1.0).
"""

from __future__ import annotations

import http.client
import re
from typing import Any, Protocol

from ..exchange import WireFlags
from ..response_head import http_date

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NO_BODY_STATUSES = frozenset({204, 304})


class WireHost(Protocol):
    """The connection an answer is written to."""

    def write(self, data: bytes) -> None: ...

    async def drained(self) -> None: ...

    def abort(self) -> None: ...


class ConnectionWire(WireFlags):
    """One answer, written to the connection: the head at the first flush or at the finish, a body of unknown
    length chunked (HTTP/1.1) or ended by closing (HTTP/1.0)."""

    def __init__(self, connection: WireHost, method: str, http_11: bool, keep_alive: bool):
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
