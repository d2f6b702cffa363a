"""A client connection taken out of tornado's hands with the bytes already read, and given back to it.

The Jupyter server reads an endpoint request's head, then hands the connection to the gateway
worker (`relay.plane`): `handed_over` takes the socket out of tornado's hands together with the
bytes already read (the head, rebuilt as received, and whatever of the body tornado buffered); the
worker's connection (`relay.connection`) parses them first. When a connection comes back (a
request outside the endpoints), or the worker went away meanwhile, `PrefixedIOStream` gives the
server's tornado those bytes first and then the socket's, so it serves the connection as if it had
accepted it.
"""

from __future__ import annotations

import os
import socket

from tornado import httputil, iostream


class PrefixedIOStream(iostream.IOStream):
    """An IOStream whose reads return `prefix` before anything the socket holds."""

    def __init__(self, sock: socket.socket, prefix: bytes, **kwargs: object):
        self._prefix = memoryview(prefix)
        super().__init__(sock, **kwargs)  # type: ignore[arg-type]

    def read_from_fd(self, buf: bytearray | memoryview) -> int | None:
        if self._prefix:
            n = min(len(buf), len(self._prefix))
            buf[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return super().read_from_fd(buf)

    def unread(self) -> bytes:
        """What is left of the prefix (not yet taken into the stream's buffer)."""
        return bytes(self._prefix)


def plain(stream: object) -> bool:
    """Whether a connection's stream is a plain socket's (no TLS session to carry): it may be handed over."""
    return isinstance(stream, iostream.IOStream) and not isinstance(stream, iostream.SSLIOStream)


def request_head(request: httputil.HTTPServerRequest) -> bytes:
    """A request's line and headers, as bytes again (header names as tornado normalised them)."""
    lines = [f"{request.method} {request.uri} {request.version}"]
    lines += [f"{name}: {value}" for name, value in request.headers.get_all()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def handed_over(stream: iostream.IOStream) -> tuple[socket.socket, bytes]:
    """A detached stream's socket (a duplicate; the stream is closed) and the bytes it had read past the head."""
    buffered = b"" if stream._user_read_buffer else bytes(stream._read_buffer)  # see the tornado contract test
    if isinstance(stream, PrefixedIOStream):
        buffered += stream.unread()
    sock = stream.socket
    raw = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
    raw.setblocking(False)
    stream.close()
    return raw, buffered
