"""A client connection out of tornado's hands while the relay worker answers on it, and its way back.

`lift` takes the socket out of its IOStream: the Jupyter server's loop then watches it no more, so
nothing the client sends meanwhile is read here (the worker may peek at it and serve it; what
it leaves stays in the kernel for tornado). `take_back` gives the socket to tornado again for the
connection's next request, or closes the server's copy of it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from tornado import iostream
from tornado.httpserver import HTTPServer

ServerGetter = Callable[[], HTTPServer] | None


def lift(stream: iostream.IOStream) -> socket.socket:
    """The connection's socket, out of a detached IOStream (which is closed: only its descriptor)."""
    sock = stream.socket
    raw = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
    raw.setblocking(False)
    stream.close()
    return raw


def take_back(server: ServerGetter, sock: socket.socket, address: Any, reusable: bool) -> None:
    """Serve the connection's next request with tornado (an answer that ended cleanly, keep-alive), or close it."""
    if reusable and server is not None and sock.fileno() != -1:
        server().handle_stream(iostream.IOStream(sock), address)
    else:
        sock.close()


async def answer_and_take_back(server: ServerGetter, sock: socket.socket, address: Any, answer: bytes,
                               keep_alive: bool) -> bool:
    """Write an answer of the server's own on a lifted connection, then give it to tornado; whether it was written."""
    stream = iostream.IOStream(sock)
    try:
        await stream.write(answer)
    except iostream.StreamClosedError:
        return False
    if keep_alive and server is not None and not stream.closed():
        server().handle_stream(stream, address)
    else:
        stream.close()
    return True
