"""One HTTP/1.1 request read from bytes peeked on a client's socket, with httptools' parser (llhttp).

The relay worker serves the requests of a connection it holds only when they are plain
(`PeekedRequest`); for anything else (a parse error, a chunked or `Expect` body, an upgrade, a
repeated header that decides something) it gives the connection back with those bytes unread,
and the Jupyter server reads them as it would have.
"""

from __future__ import annotations

from dataclasses import dataclass

import httptools

#: Headers whose repetition changes what a request means (tornado joins them; a proxy may pick one).
SINGLE_HEADERS = frozenset({
    "authorization", "x-api-key", "origin", "content-type", "content-length", "connection", "host",
})
#: Headers that need the Jupyter server's full request handling.
NOT_PLAIN = frozenset({"transfer-encoding", "expect", "upgrade", "access-control-request-method"})
METHODS = frozenset({"GET", "POST"})  # HEAD, like every other method, is the server's to answer


@dataclass
class PeekedRequest:
    """A complete request: its line, headers and body, and how many bytes it takes on the wire."""

    method: str
    target: str  # the raw request target, undecoded
    headers: list[tuple[str, str]]
    body: bytes
    size: int
    keep_alive: bool

    def header(self, name: str) -> str | None:
        """A header's value (names compared without case); None when absent."""
        lower = name.lower()
        return next((v for n, v in self.headers if n.lower() == lower), None)


class _Collector:
    """httptools' callbacks: the target, headers and body of the first request only."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.complete = False
        self.parser: httptools.HttpRequestParser | None = None
        self.method = ""
        self.version = ""

    def on_url(self, url: bytes) -> None:
        if not self.complete:
            self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.complete:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        # Read here: once the parser goes on to a pipelined next request, it answers for that one.
        if not self.complete and self.parser is not None and not self.method:
            self.method = self.parser.get_method().decode("latin-1")
            self.version = self.parser.get_http_version()

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


class NotPlain(Exception):
    """The bytes are not a plain request this reader serves: the Jupyter server must read them."""


def read_request(data: bytes) -> PeekedRequest | None:
    """The first request in `data`; None while it is incomplete; NotPlain when it is not a plain one."""
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head_size = head_end + 4
    if data.count(b"\n", 0, head_size) != data.count(b"\r\n", 0, head_size):
        raise NotPlain("a bare line feed in the head")
    collector = _Collector()
    parser = httptools.HttpRequestParser(collector)
    collector.parser = parser
    try:
        parser.feed_data(data)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
        if not collector.complete:
            raise NotPlain(str(exc)) from None
    if not collector.method:
        raise NotPlain("the head did not parse")  # with its blank line there it must have: never guess
    if collector.version != "1.1":
        raise NotPlain("not HTTP/1.1")
    method = collector.method
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in collector.headers]
    names = [n.lower() for n, _ in headers]
    if method not in METHODS or any(n in NOT_PLAIN for n in names):
        raise NotPlain(f"{method} with {names}")
    if any(names.count(n) > 1 for n in SINGLE_HEADERS):
        raise NotPlain("a repeated header")
    length_value = next((v for n, v in headers if n.lower() == "content-length"), "0").strip()
    if not length_value.isdigit():
        raise NotPlain("no plain Content-Length")
    size = head_size + int(length_value)
    if len(data) < size:
        return None
    if not collector.complete or bytes(collector.body) != data[head_size:size]:
        raise NotPlain("the parser and the length disagree")
    connection = next((v for n, v in headers if n.lower() == "connection"), "")
    keep_alive = "close" not in {token.strip().lower() for token in connection.split(",")}
    return PeekedRequest(method, collector.url.decode("latin-1"), headers, data[head_size:size], size, keep_alive)
