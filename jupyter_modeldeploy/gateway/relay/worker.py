"""The gateway worker: a process of its own that owns endpoint traffic.

The Jupyter server reads an endpoint request's head and hands the connection over (`Handoff`,
the socket passed with SCM_RIGHTS); from then on every request on that connection is served
here, by the same handler the server would run (`proxy.EndpointHandler`) over this process's
`WorkerGateway`: one admission, one set of counters, records reported to the server before each
answer's end. The worker also listens itself (its doors): on a Unix socket in the state folder
(0600) and, when a setting asks, on a loopback port, for same-host clients (a batch job,
jupyter-ai, a load test) that skip the Jupyter hop; the request's record names its door.

    python -m jupyter_modeldeploy.gateway.relay.worker --channel FD [--socket PATH] [--port N] ...

It ends when its channel closes (the server stopped or let it go).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Callable
from typing import Any

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets, bind_unix_socket

from ..core import GatewayConfig
from ..detached import PrefixedIOStream, handed_over, request_head
from ..proxy import ENDPOINT_PATTERN, EndpointHandler
from .channel import FrameReader, FrameWriter
from .protocol import Handoff, Message, ProtocolError, Ready, State, Woken, decode, encode
from .worker_gateway import WorkerGateway

log = logging.getLogger("jupyter_modeldeploy.gateway_worker")

MAX_BODY_BYTES = 256 << 20  # tornado's own cap; each route's limit is the handler's (`admission`)


@web.stream_request_body
class NotAnEndpoint(web.RequestHandler):
    """A request outside the endpoints: on a connection the server handed over, the connection goes back to
    the server (before its body is read), which serves it from this request on; on a door, 404 with a JSON body."""

    def initialize(self, give_back: Callable[[web.RequestHandler], bool] | None = None) -> None:
        self.give_back = give_back

    def check_xsrf_cookie(self) -> None:
        """Nothing is decided here."""

    def prepare(self) -> None:
        if self.give_back is not None and self.give_back(self):
            self._finished = True  # the server's now: nothing more happens here
            return
        self.set_status(404)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": {"message": "not an endpoint: /modeldeploy/endpoints/<route>/...",
                                          "type": "not_found_error", "code": 404}}))


def application(gateway: WorkerGateway, door: str, base_url: str = "/",
                give_back: Callable[[web.RequestHandler], bool] | None = None) -> web.Application:
    """The worker's app for one door: only the endpoint pattern (under the Jupyter server's base URL too)."""
    patterns = dict.fromkeys([re.escape(base_url.rstrip("/")) + ENDPOINT_PATTERN, ENDPOINT_PATTERN])
    return web.Application([(p, EndpointHandler, {"gateway": gateway, "door": door}) for p in patterns],
                           default_handler_class=NotAnEndpoint, default_handler_args={"give_back": give_back})


class Worker:
    """The channel to the server, the gateway state, and the HTTP servers of the doors."""

    def __init__(self, channel: socket.socket, config: GatewayConfig, base_url: str = "/"):
        self.channel = channel
        self.writer = FrameWriter(channel)
        self.reader = FrameReader(channel, self._frame, self._end)
        self.gateway = WorkerGateway(config, self.report, self.reader.settle)
        self.handed = HTTPServer(application(self.gateway, "jupyter", base_url, self.give_back),
                                 max_body_size=MAX_BODY_BYTES)
        self.servers: list[HTTPServer] = [self.handed]
        self.doors: list[str] = []
        self.ended = asyncio.Event()
        self._ready_sent = False

    def report(self, message: Message) -> None:
        """Send a report to the server (synchronously: in its queue when this returns)."""
        frame = encode(message)
        try:
            self.writer.send(frame.header, frame.body)
        except OSError:
            self._end("the server went away")

    def give_back(self, handler: web.RequestHandler) -> bool:
        """Hand a connection the server handed over back to it, with the request just read (see `NotAnEndpoint`)."""
        request = handler.request
        connection: Any = request.connection
        if type(getattr(connection, "stream", None)) is not PrefixedIOStream:
            return False
        address = connection.context.address
        sock, buffered = handed_over(handler.detach())
        frame = encode(Handoff(address, request_head(request) + buffered))
        try:
            self.writer.send(frame.header, frame.body, fd=sock.fileno())
        except OSError:
            self._end("the server went away")
        finally:
            sock.close()
        return True

    def open_doors(self, unix_path: str | None, port: int | None) -> None:
        """Listen on the Unix socket (0600) and the loopback port, where asked."""
        if unix_path:
            server = HTTPServer(application(self.gateway, "socket"), max_body_size=MAX_BODY_BYTES)
            server.add_socket(bind_unix_socket(unix_path, mode=0o600))
            self.servers.append(server)
            self.doors.append(f"unix:{unix_path}")
        if port is not None:
            server = HTTPServer(application(self.gateway, "port"), max_body_size=MAX_BODY_BYTES)
            sockets = bind_sockets(port, "127.0.0.1")
            server.add_sockets(sockets)
            self.servers.append(server)
            self.doors.append(f"http://127.0.0.1:{sockets[0].getsockname()[1]}")

    def _frame(self, header: dict[str, Any], body: bytes, fd: int | None) -> None:
        try:
            message = decode(header, body)
        except ProtocolError as exc:
            log.error("a frame the worker cannot read: %s", exc)
            if fd is not None:
                os.close(fd)
            return
        if isinstance(message, Handoff) and fd is not None:
            sock = socket.socket(fileno=fd)
            sock.setblocking(False)
            address = tuple(message.address) if isinstance(message.address, list) else message.address
            self.handed.handle_stream(PrefixedIOStream(sock, message.prefix), address)
            return
        if fd is not None:
            os.close(fd)  # a descriptor with no connection to serve: never leak one
        if isinstance(message, Woken):
            self.gateway.woken(message.deployment_id)
        elif isinstance(message, State):
            self.gateway.apply(message)
            if not self._ready_sent:
                self._ready_sent = True
                self.report(Ready(os.getpid(), tuple(self.doors)))

    def _end(self, reason: str) -> None:
        self.ended.set()

    async def serve(self) -> None:
        self.reader.start()
        await self.ended.wait()
        for server in self.servers:
            server.stop()
        await self.gateway.close()


async def run(args: argparse.Namespace) -> None:
    channel = socket.socket(fileno=args.channel)
    channel.setblocking(False)
    config = GatewayConfig(upstream_timeout_s=args.upstream_timeout, connect_timeout_s=args.connect_timeout,
                           default_payload_limit=args.payload_limit)
    worker = Worker(channel, config, args.base_url)
    worker.open_doors(args.socket, args.port)
    await worker.serve()


def main(argv: list[str] | None = None) -> int:
    """Run the worker on the channel descriptor the server passed."""
    parser = argparse.ArgumentParser(prog="jupyter_modeldeploy.gateway.relay.worker")
    parser.add_argument("--channel", type=int, required=True)
    parser.add_argument("--socket")
    parser.add_argument("--port", type=int)
    parser.add_argument("--upstream-timeout", type=float, default=600.0)
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    parser.add_argument("--payload-limit", type=int, default=16 << 20)
    parser.add_argument("--base-url", default="/")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="[gateway worker] %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
