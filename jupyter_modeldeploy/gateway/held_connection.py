"""A client connection the relay worker holds under a lease, and serves itself request after request.

Each next request is peeked at on the socket first, so nothing is read that the worker does not
serve: a request its lease does not admit (`Lease.admit`), one that is not plain
(`request_head.read_request`), a stale lease, or a connection quiet for IDLE_GIVE_BACK_S goes back
to the Jupyter server with its bytes where they were. What the worker serves is reported to the
server as it would have counted it: `started` when it is sent on (batched: `RelayWorker.report`),
then its record, sent before the bytes by which the client can tell its answer ended (`answer_end`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .lease import Lease, LeasedRequest
from .request_head import NotPlain, PeekedRequest, read_request
from .upstream import UpstreamClient

log = logging.getLogger("jupyter_modeldeploy.relay_worker")

MAX_PEEK = 256 * 1024  # a request larger than this (head and body) is the server's to read
IDLE_GIVE_BACK_S = 60.0  # a connection quiet this long goes back to the server (and its idle timeout)
PARTIAL_WAIT_S = 0.005  # how long a request whose first bytes came is waited for, before the server gets it
AGAIN, CLOSED, TAKEN = "again", "closed", "taken"  # after an answer: the next request, the end, the server's


class Relayer(Protocol):
    """The worker's side this connection reports to (`relay_worker.RelayWorker`)."""

    upstream: UpstreamClient
    generation: int
    in_flight: dict[str, int]

    async def tell(self, frame: dict[str, Any]) -> None: ...

    def report(self, frame: dict[str, Any]) -> None: ...

    def relay_on(self, job: dict[str, Any], body: bytes, fd: int,
                 report_end: Callable[[dict[str, Any]], Awaitable[None]]) -> Awaitable[dict[str, Any]]: ...


class HeldConnection:
    """Serves the plain requests of one client connection under its lease; gives the rest back."""

    def __init__(self, worker: Relayer, conn_id: int, fd: int, lease: Lease):
        self.worker = worker
        self.conn_id = conn_id
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        self.lease = lease

    async def serve(self) -> None:
        """Serve requests until one is not ours (given back) or the client leaves (closed)."""
        end: dict[str, Any] | None = {"closed": True}
        try:
            while True:
                request = await self._next_request()
                if request is None:
                    break  # the client closed its side
                leased = self._admit(request)
                if leased is None:
                    end = {"back": True}
                    break
                self._consume(request.size)
                after = await self._serve(leased)
                if after != AGAIN:
                    end = None if after == TAKEN else end
                    break
        except NotPlain:
            end = {"back": True}
        except (TimeoutError, asyncio.TimeoutError):
            end = {"back": True}
        except OSError:
            pass  # the connection broke: closed
        except Exception:  # whatever happened, the server must hear the connection is closed
            log.exception("a held connection failed")
        finally:
            self.sock.close()  # our copy; the server's decides the connection's fate
        if end is not None:
            with contextlib.suppress(OSError):
                await self.worker.tell({"conn": self.conn_id, **end})

    def _admit(self, request: PeekedRequest) -> LeasedRequest | None:
        if self.lease.generation != self.worker.generation:
            return None
        return self.lease.admit(request, now=time.time(),
                                in_flight=self.worker.in_flight.get(self.lease.deployment_id, 0))

    async def _next_request(self) -> PeekedRequest | None:
        """The next complete request, peeked; None when the client closed; NotPlain or a timeout: give it back."""
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(self._readable(loop), IDLE_GIVE_BACK_S)
        deadline = loop.time() + PARTIAL_WAIT_S
        while True:
            data = self.sock.recv(MAX_PEEK, socket.MSG_PEEK)
            if not data:
                return None
            request = read_request(data)
            if request is not None:
                return request
            if len(data) >= MAX_PEEK or loop.time() >= deadline:
                raise NotPlain("an incomplete or large request")
            await asyncio.sleep(0.001)  # readability holds while bytes wait: poll for the rest briefly

    async def _readable(self, loop: asyncio.AbstractEventLoop) -> None:
        ready = loop.create_future()
        loop.add_reader(self.sock.fileno(), lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            loop.remove_reader(self.sock.fileno())

    def _consume(self, size: int) -> None:
        """Take the request's bytes off the socket (they are all there: they were peeked)."""
        while size > 0:
            got = self.sock.recv(min(size, MAX_PEEK))
            if not got:
                raise OSError("the client left")
            size -= len(got)

    async def _serve(self, leased: LeasedRequest) -> str:
        """Forward one request and write its answer; then AGAIN, CLOSED or TAKEN (the server answers)."""
        worker, lease = self.worker, self.lease
        dep_id = lease.deployment_id
        started = time.perf_counter()
        record: dict[str, Any] = {"model": leased.model, "method": leased.job["method"], "path": leased.path,
                                  "key_id": lease.key_id}
        sent = False

        async def report_end(report: dict[str, Any]) -> None:
            nonlocal sent
            sent = True
            await worker.tell({"conn": self.conn_id, "record": {
                **record, **report, "latency_s": time.perf_counter() - started}})

        worker.in_flight[dep_id] = worker.in_flight.get(dep_id, 0) + 1
        try:
            worker.report({"conn": self.conn_id, "started": True})
            try:
                outcome = await worker.relay_on(leased.job, leased.body, os.dup(self.sock.fileno()), report_end)
            except Exception as exc:  # its record still goes to the server, which counts it ended
                log.exception("relay failed")
                outcome = {"outcome": "cut", "status": 502, "message": f"the relay failed ({type(exc).__name__})"}
        finally:
            worker.in_flight[dep_id] -= 1
        kind = outcome.get("outcome")
        if kind in ("unreachable", "timeout", "error"):
            # Nothing was written: the server answers the error, as for a request it forwarded itself.
            await worker.tell({"conn": self.conn_id, "failed": outcome, "keep_alive": leased.job["keep_alive"],
                               "record": {**record, "latency_s": time.perf_counter() - started}})
            return TAKEN
        if not sent:
            await report_end({"status": outcome.get("status") or 502, "first_chunk_s": outcome.get("first_chunk_s"),
                              "streamed": outcome.get("streamed"), "usage": outcome.get("usage")})
        return AGAIN if kind == "done" and outcome.get("reusable") else CLOSED
