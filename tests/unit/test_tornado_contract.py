"""The tornado internals the gateway's handler relies on, named in one place.

`gateway/proxy.py` resets an answer without tornado's per-request date formatting (`clear`),
asks whether an answer was finished or its head written, marks a request finished once its
connection went to the gateway worker, and takes the bytes a connection's stream read past the
head when it hands the connection over (`gateway/detached.py`). Those are private attributes: tornado is pinned
below its next major in pyproject.toml, and this test fails on an upgrade that drops one.
"""

from __future__ import annotations

from pathlib import Path

import tomllib
import tornado
from tornado import httputil, iostream, web

HANDLER_INTERNALS = ("_headers", "_write_buffer", "_status_code", "_reason", "_finished", "_headers_written")
STREAM_INTERNALS = ("_read_buffer", "_user_read_buffer")


def test_tornado_is_pinned_below_its_next_major() -> None:
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    pins = [d for d in project["project"]["dependencies"] if d.startswith("tornado")]
    assert pins and "<7" in pins[0].replace(" ", ""), pins
    assert tornado.version_info[0] == 6


def test_the_handler_internals_the_gateway_uses_exist() -> None:
    connection = type("Connection", (), {"set_close_callback": lambda self, cb: None,
                                         "context": None})()
    request = httputil.HTTPServerRequest(
        start_line=httputil.RequestStartLine("GET", "/", "HTTP/1.1"), headers=httputil.HTTPHeaders({"Host": "localhost"}),
        connection=connection)
    handler = web.RequestHandler(web.Application(), request)
    missing = [name for name in HANDLER_INTERNALS if not hasattr(handler, name)]
    assert missing == [], f"tornado {tornado.version} no longer has {missing}"


def test_the_stream_internals_the_gateway_uses_exist() -> None:
    import socket

    a, b = socket.socketpair()
    try:
        stream = iostream.IOStream(a)
        missing = [name for name in STREAM_INTERNALS if not hasattr(stream, name)]
        assert missing == [], f"tornado {tornado.version} no longer has {missing}"
        stream.close()
    finally:
        b.close()
