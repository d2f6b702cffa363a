"""The gateway worker: a process of its own that owns endpoint traffic.

The Jupyter server reads an endpoint request's head and hands the connection over (`Handoff`,
the socket passed with SCM_RIGHTS); from then on every request on that connection is served
here, on the worker's own lean HTTP connections (`connection`: llhttp framing, no web framework)
that run the same `exchange.EndpointExchange` the server would run, over this process's
`WorkerGateway`: one admission, one set of counters, records reported to the server in batches
(`outbox`), and at once when a reader of counts there asks (`Sync`). The worker also listens
itself (its doors): on a Unix socket in the state folder (0600) and, when a setting asks, on a
loopback port, for same-host clients (a batch job, jupyter-ai, a load test) that skip the
Jupyter hop; the request's record names its door.

    python -m jupyter_modeldeploy.gateway.relay.worker --channel FD [--socket PATH] [--port N] ...

It ends when its channel closes (the server stopped or let it go).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import os
import socket
import sys
from typing import Any

from tornado.netutil import bind_sockets, bind_unix_socket

from ..core import GatewayConfig
from .channel import FrameReader, FrameWriter, SentCount
from .connection import EndpointConnection
from .outbox import Outbox
from .protocol import Handoff, Message, ProtocolError, Ready, Reports, State, Sync, Synced, Woken, decode, encode
from .worker_gateway import WorkerGateway

log = logging.getLogger("jupyter_modeldeploy.gateway_worker")


class Worker:
    """The channel to the server, the gateway state, and the HTTP servers of the doors."""

    def __init__(self, channel: socket.socket, config: GatewayConfig, base_url: str = "/",
                 sent: SentCount | None = None):
        self.channel = channel
        self.base_url = base_url
        self.writer = FrameWriter(channel)
        # `sent`: the server's count of frames sent; before each request the worker settles when it moved
        self.reader = FrameReader(channel, self._frame, self._end, sent)
        self.outbox = Outbox(self._send_reports)
        self.gateway = WorkerGateway(config, self.outbox, self.reader.settle_new)
        self.servers: list[asyncio.Server] = []
        self.doors: list[str] = []
        self.ended = asyncio.Event()
        self._ready_sent = False

    def report(self, message: Message) -> None:
        """Send a message to the server now (synchronously: in its queue when this returns), after the reports
        gathered so far."""
        self.outbox.flush()
        self._send(message)

    def _send_reports(self, messages: list[Message]) -> None:
        self._send(messages[0] if len(messages) == 1 else Reports(tuple(messages)))  # type: ignore[arg-type]

    def _send(self, message: Message, fd: int | None = None) -> None:
        frame = encode(message)
        try:
            self.writer.send(frame.header, frame.body, fd=fd)
        except OSError:
            self._end("the server went away")

    def give_back(self, sock: socket.socket, prefix: bytes) -> None:
        """Hand a connection the server handed over back to it, with the bytes of the request it must serve
        (one outside the endpoints: see `connection`)."""
        try:
            peer = sock.getpeername()
        except OSError:
            peer = ""
        self.outbox.flush()  # its last request's record first
        try:
            self._send(Handoff(peer if isinstance(peer, tuple) else str(peer), prefix), fd=sock.fileno())
        finally:
            sock.close()

    async def open_doors(self, unix_path: str | None, port: int | None) -> None:
        """Listen on the Unix socket (0600) and the loopback port, where asked."""
        loop = asyncio.get_running_loop()
        if unix_path:
            sock = bind_unix_socket(unix_path, mode=0o600)
            self.servers.append(await loop.create_server(lambda: EndpointConnection(self.gateway, "socket"),
                                                         sock=sock))
            self.doors.append(f"unix:{unix_path}")
        if port is not None:
            sockets = bind_sockets(port, "127.0.0.1")
            for sock in sockets:
                self.servers.append(await loop.create_server(lambda: EndpointConnection(self.gateway, "port"),
                                                             sock=sock))
            self.doors.append(f"http://127.0.0.1:{sockets[0].getsockname()[1]}")

    def _take(self, sock: socket.socket, prefix: bytes) -> None:
        """Serve a connection the server handed over, from the request whose bytes it read (`prefix`)."""
        def connection() -> EndpointConnection:
            return EndpointConnection(self.gateway, "jupyter", self.base_url, prefix, self.give_back)

        task = asyncio.get_running_loop().create_task(
            asyncio.get_running_loop().connect_accepted_socket(connection, sock))
        task.add_done_callback(lambda t: t.cancelled() or (t.exception() and log.error(
            "a handed-over connection could not be served: %s", t.exception())))

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
            self._take(sock, message.prefix)
            return
        if fd is not None:
            os.close(fd)  # a descriptor with no connection to serve: never leak one
        if isinstance(message, Sync):
            self.report(Synced(message.number))  # after every report made so far
        elif isinstance(message, Woken):
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
            server.close()
        await self.gateway.close()


async def run(args: argparse.Namespace) -> None:
    channel = socket.socket(fileno=args.channel)
    channel.setblocking(False)
    config = GatewayConfig(upstream_timeout_s=args.upstream_timeout, connect_timeout_s=args.connect_timeout,
                           default_payload_limit=args.payload_limit, plain_requests=not args.no_plain)
    sent = None
    if args.sent_count is not None:
        sent = SentCount(args.sent_count)
        os.close(args.sent_count)  # (the map stays)
    worker = Worker(channel, config, args.base_url, sent)
    await worker.open_doors(args.socket, args.port)
    await worker.serve()


def main(argv: list[str] | None = None) -> int:
    """Run the worker on the channel descriptor the server passed."""
    parser = argparse.ArgumentParser(prog="jupyter_modeldeploy.gateway.relay.worker")
    parser.add_argument("--channel", type=int, required=True)
    parser.add_argument("--sent-count", type=int, help="the memory holding the server's count of frames sent")
    parser.add_argument("--socket")
    parser.add_argument("--port", type=int)
    parser.add_argument("--upstream-timeout", type=float, default=600.0)
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    parser.add_argument("--payload-limit", type=int, default=16 << 20)
    parser.add_argument("--base-url", default="/")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--no-plain", action="store_true", help="serve every request by the exchange (`plain`)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="[gateway worker] %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        if args.loop == "uvloop" and importlib.util.find_spec("uvloop") is not None:
            import uvloop

            uvloop.run(run(args))
        else:
            asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
