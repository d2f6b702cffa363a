"""The gateway as the Jupyter server runs it: the control plane, and the data plane while no worker serves.

`Gateway` holds the supervisor and the key registry. It starts the gateway worker (`relay.plane`),
publishes the state feed to it (`feed`: on every deployment or key signal, before every REST answer,
and each second), hands it every endpoint connection it can (`hand_off`), and takes its reports:
started and finished requests go to the supervisor's counters and to the observers (metrics,
per-key usage, request log), a wake request to the supervisor. While no worker serves (it is
starting, it died, the platform cannot pass sockets, or the connection is TLS or HTTP/1.0), the
same exchange serves the request here, in tornado's handler, with this process's counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import threading
import time
from dataclasses import replace
from typing import Any

from tornado import web

from ..keys import hash_key
from ..supervisor import Deployment, Supervisor
from ..supervisor.replicas import Replica
from .core import GatewayConfig, GatewayCore
from .detached import PrefixedIOStream, handed_over, plain, request_head
from .feed import StateFeed
from .relay.plane import DataPlane, WorkerSettings
from .relay.protocol import Finished, Handoff, Queued, ReplicaLoad, Started, State, Unreachable
from .tokens import TokenInfo, TokenRegistry
from .waiting_line import LineStats, WaitingLine

log = logging.getLogger(__name__)

PUBLISH_EVERY_S = 1.0  # what changed without a signal (a replica's state) reaches the worker within this


class Gateway(GatewayCore):
    """The server's gateway: see the module's docstring."""

    def __init__(self, supervisor: Supervisor, tokens: TokenRegistry, config: GatewayConfig | None = None,
                 worker: WorkerSettings | None = None):
        super().__init__(config)
        self.supervisor = supervisor
        self.tokens = tokens
        self.feed = StateFeed(lambda: list(supervisor.deployments.values()), tokens.indexed)
        self.plane = DataPlane(self, worker) if worker is not None and DataPlane.supported() else None
        self._ticker: asyncio.Task[None] | None = None
        self._publishing = threading.Lock()  # a key created from another thread publishes too
        self._wakes: set[asyncio.Future[None]] = set()  # wakes under way for the worker
        self._worker_lines: dict[str, LineStats] = {}  # each deployment's waiting line in the worker, as reported
        supervisor.changes.connect(lambda _change: self.publish())
        tokens.changes.connect(lambda _change: self.publish())

    def start(self) -> None:
        """Start the worker in the background (endpoint requests arriving meanwhile wait for it) and the
        publishing ticker."""
        if self.plane is not None:
            self.plane.available()
            self._ticker = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_EVERY_S)
            try:
                self.publish()
                if self.plane is not None:
                    self.plane.available()  # a worker that died is started again
            except Exception:
                log.exception("publishing the gateway state failed")

    # The control plane ----------------------------------------------------------------------

    def publish(self) -> None:
        """Send the worker what changed since the last version (synchronously), if anything did."""
        plane = self.plane
        if plane is None or not plane.serving:
            return
        with self._publishing:
            state = self.feed.changes()
            if state is not None:
                plane.publish(state)

    def settle(self) -> None:
        """Take every report the worker sent so far."""
        if self.plane is not None:
            self.plane.settle()

    async def synced(self) -> None:
        """Take every report the worker made so far: counts read after this include every answer already ended."""
        if self.plane is not None:
            await self.plane.sync()

    async def hand_off(self, handler: web.RequestHandler) -> bool:
        """Give a plain HTTP/1.1 connection to the worker, from its first request on (see `detached`).

        A worker that is starting is waited for: one process counts, also in a server's first seconds."""
        plane = self.plane
        if plane is None:
            return False
        request = handler.request
        connection: Any = request.connection
        if request.version != "HTTP/1.1" or not plain(getattr(connection, "stream", None)):
            return False  # TLS (the socket cannot carry its session) or HTTP/1.0: served here
        if not await plane.ready():
            return False  # it failed moments ago: served here until it is started again
        self.publish()  # what changed without a signal (a replica put in rotation) before the connection goes
        address = connection.context.address
        sock, buffered = handed_over(handler.detach())
        prefix = request_head(request) + buffered
        if plane.hand_off(sock.fileno(), address, prefix):
            sock.close()  # the worker holds its own copy
            return True
        server = self.config.http_server
        if server is None:
            sock.close()
        else:  # the worker went away meanwhile: this server serves the connection from its first request on
            server().handle_stream(PrefixedIOStream(sock, prefix), address)
        return True

    # What admission reads -------------------------------------------------------------------

    def by_route(self, route: str) -> Deployment | None:
        return self.supervisor.by_route(route)

    def lookup(self, key: str) -> TokenInfo | None:
        return self.tokens.lookup(key)

    def key_belongs_elsewhere(self, key: str, dep: Any) -> bool:
        digest = hash_key(key)  # once, not once per deployment
        return any(d.api_key_hash is not None and hmac.compare_digest(digest, d.api_key_hash)
                   for d in self.supervisor.deployments.values() if d.id != dep.id)

    # Counters of requests served here -------------------------------------------------------

    def touch(self, info: TokenInfo, now: float) -> None:
        self.tokens.touch(info, now)

    def request_started(self, dep: Any, book: str | None) -> None:
        self.supervisor.request_started(dep)

    def request_finished(self, dep: Any, book: str | None, tokens: int) -> None:
        self.supervisor.request_finished(dep)

    def replica_unreachable(self, dep: Any, replica: Replica, reason: str) -> None:
        self.supervisor.replica_unreachable(dep, replica, reason)

    async def wake(self, dep: Any) -> None:
        if self.config.wake is not None:
            await self.config.wake(dep)

    # The worker's reports (relay.plane.PlaneHost) ---------------------------------------------

    def snapshot(self) -> State:
        return self.feed.snapshot(self.quotas)

    def started(self, message: Started) -> None:
        """The worker admitted a request: the deployment's idle clock and count; its key's quota counts mirrored
        here (a worker started later goes on from them)."""
        dep = self.supervisor.deployments.get(message.deployment_id)
        if dep is not None:
            self.supervisor.request_started(dep)
        if message.book is not None:
            self.quotas.mirror(message.book, time.time())

    def released(self, deployment_id: str, book: str | None, tokens: int) -> None:
        dep = self.supervisor.deployments.get(deployment_id)
        if dep is not None:
            self.supervisor.request_finished(dep)
        if book is not None:
            self.quotas.release(book, tokens, time.time())

    def replica_load_reported(self, message: ReplicaLoad) -> None:
        """The worker sent a request to a placed replica, or it left: the count a removal drains by."""
        dep = self.supervisor.deployments.get(message.deployment_id)
        for replica in dep.replicas if dep is not None else ():
            if replica.id == message.replica_id:
                replica.in_flight = max(0, replica.in_flight + message.delta)

    def queue_reported(self, message: Queued) -> None:
        """The worker's waiting line of a deployment changed."""
        self._worker_lines[message.deployment_id] = message.stats
        self._show_line(message.deployment_id)

    def line_changed(self, deployment_id: str, line: WaitingLine) -> None:
        self._show_line(deployment_id)

    def worker_gone(self) -> None:
        """The requests waiting in the worker's lines went with it (their counts so far stay)."""
        for deployment_id, stats in list(self._worker_lines.items()):
            self._worker_lines[deployment_id] = replace(stats, depth=0)
            self._show_line(deployment_id)

    def _show_line(self, deployment_id: str) -> None:
        """The deployment's record (REST, dashboard, Prometheus) shows its line as it is now."""
        dep = self.supervisor.deployments.get(deployment_id)
        if dep is not None:
            dep.queue = self.line_stats(deployment_id).to_json()

    def line_stats(self, deployment_id: str) -> LineStats:
        """A deployment's waiting line: the worker's, as reported, and this loop's own (requests it served while
        no worker did), together."""
        own = self.lines[deployment_id].stats() if deployment_id in self.lines else LineStats()
        return self._worker_lines.get(deployment_id, LineStats()) + own

    def finished(self, message: Finished) -> None:
        if message.started:
            self.released(message.deployment_id, message.book, message.tokens)
        record = message.record
        if record is None:
            return
        dep = self.supervisor.deployments.get(message.deployment_id)
        if record.replica is not None and dep is not None:
            for replica in dep.replicas:  # the worker sent it there: the record's per-replica counts
                if replica.id == record.replica:
                    replica.requests += 1
        with contextlib.suppress(KeyError):
            self.tokens.touch(self.tokens.get(record.key_id), time.time())
        self.observe(record, claimed=message.started)

    def wake_requested(self, deployment_id: str) -> None:
        """Wake a deployment for the worker; when that is over, publish the state it led to, then say so."""
        dep = self.supervisor.deployments.get(deployment_id)
        wake = self.config.wake
        task = asyncio.ensure_future(self._wake_for_worker(dep, wake, deployment_id))
        self._wakes.add(task)
        task.add_done_callback(self._wakes.discard)

    async def _wake_for_worker(self, dep: Deployment | None, wake: Any, deployment_id: str) -> None:
        try:
            if dep is not None and wake is not None:
                await wake(dep)
        except Exception:  # the wake failed: its state says so, and the waiting requests are refused by it
            log.exception("waking deployment %s for the gateway worker failed", deployment_id)
        finally:
            self.publish()
            if self.plane is not None:
                self.plane.woken(deployment_id)

    def handed_back(self, fd: int, message: Handoff) -> None:
        """A connection whose next request is not an endpoint's: this server serves it again, from that request on."""
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        server = self.config.http_server
        if server is None:
            sock.close()
            return
        address = tuple(message.address) if isinstance(message.address, list) else message.address
        server().handle_stream(PrefixedIOStream(sock, message.prefix), address)

    def unreachable(self, message: Unreachable) -> None:
        dep = self.supervisor.deployments.get(message.deployment_id)
        replica = next((r for r in dep.replicas if r.id == message.replica_id), None) if dep is not None else None
        if dep is not None and replica is not None:
            self.supervisor.replica_unreachable(dep, replica, message.reason)

    async def close(self) -> None:
        """Stop the ticker and the worker; close the upstream pools."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self.plane is not None:
            await self.plane.close()
        await super().close()
