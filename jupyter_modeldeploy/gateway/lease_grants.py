"""The Jupyter server's side of leases (`lease`): which connections get one, and those the worker holds.

A request the server admitted in full goes to the relay worker with a lease when its key's next
requests need nothing only the server can do: no quotas (they are counted here), no model scope,
no captured bodies, one local replica, a deployment that serves now. The worker then serves that
connection's plain requests itself and reports each (`started`, then its record); here they are
counted exactly as the handler counts its own. The server keeps its copy of the connection and
takes it back when the worker gives it back, or answers an error the worker could not send on.
Anything a lease was made from that changes raises the generation, which the worker hears at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..supervisor import Deployment, Status
from ..supervisor.tokens import TokenInfo
from .auth import READ_METHODS
from .detached import answer_and_take_back, take_back
from .lease import Lease, fingerprint
from .records import FIXED_KEY_ID, RequestRecord
from .refusals import Refusal, refusal_answer, relay_refusal
from .relay_pool import StreamRelay, address_document
from .usage import Usage

if TYPE_CHECKING:
    from .proxy import Gateway

log = logging.getLogger(__name__)

LEASABLE = (Status.ACTIVE, Status.IDLE)


@dataclass
class Held:
    """A connection the worker holds: the server's own copy, and what its requests are counted under."""

    sock: socket.socket
    address: Any
    deployment_id: str
    cors: dict[str, str]
    in_request: bool = False  # a request of it is in flight (`started` came, its record not yet)


class LeaseGrants:
    """Grants leases, follows the generation, and counts what the worker serves under them."""

    def __init__(self, gateway: Gateway, relay: StreamRelay):
        self.gateway = gateway
        self.relay = relay
        self.generation = 1
        self.served = 0  # requests the worker served under leases
        self._held: dict[int, Held] = {}
        self._in_flight: dict[str, int] = {}  # per deployment, leased requests in flight
        self._tasks: set[asyncio.Task[Any]] = set()
        relay.on_held = self.on_frame
        relay.on_lost = self.drop_all

    # What makes a lease ---------------------------------------------------------------------

    def grant(self, dep: Deployment, *, token: TokenInfo | None, key_id: str, presented: str | None,
              origin: str | None, cors: dict[str, str], prefix: str) -> Lease | None:
        """A lease for the connection of a request just admitted, or None when its next requests need the server."""
        plan = dep.plan
        if (plan is None or dep.status not in LEASABLE or dep.ray_run is not None or len(dep.replicas) != 1
                or dep.config.capture_bodies):
            return None
        replica = dep.replicas[0]
        if replica.address is None:
            return None
        if token is not None and (token.quotas is not None or token.models is not None):
            return None
        if key_id == FIXED_KEY_ID and dep.config.api_key_quotas.limits():
            return None
        allowed = READ_METHODS if token is not None and token.role == "read" else None
        routes: dict[str, list[str]] = {}
        for route in plan.routes.routes:
            # Paths the handler reads otherwise: its own /health, and `<model>/...` for a model named so.
            if route.path == "/health" or route.path.split("/")[1] in dep.models:
                continue
            methods = route.methods & allowed if allowed is not None else route.methods
            if methods:
                routes[route.path] = sorted(methods)
        public = dep.config.public
        return Lease(
            generation=self.generation, deployment_id=dep.id, prefix=prefix,
            key=None if public else fingerprint(presented), key_id=key_id,
            expires_at=token.expires_at if token is not None and not public else None,
            origin=origin, cors=cors, routes=routes, models=list(dep.models),
            limits={name: {"payload_limit_bytes": lim.payload_limit_bytes,
                           "max_client_batch_size": lim.max_client_batch_size} for name, lim in plan.limits.items()},
            payload_limit=int(plan.largest_payload_limit() or self.gateway.config.default_payload_limit),
            stream_usage=plan.stream_usage, max_in_flight=plan.max_concurrent_requests,
            address=address_document(replica.address), engine_key=replica.engine_key,
            timeout_s=self.gateway.config.upstream_timeout_s,
            # The request being handed over ends before its connection's next one is read.
            server_in_flight=max(0, dep.in_flight - 1 - self._in_flight.get(dep.id, 0)),
        )

    def changed(self) -> None:
        """Something a lease may have been made from changed: no lease made before admits anything more."""
        self.generation += 1
        task = asyncio.ensure_future(self.relay.tell({"generation": self.generation}))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Connections the worker holds ------------------------------------------------------------

    def hold(self, conn_id: int, sock: socket.socket, address: Any, dep: Deployment,
             cors: dict[str, str]) -> None:
        """The worker kept the connection of the request it relayed as `conn_id` (`sock`: the server's copy)."""
        self._held[conn_id] = Held(sock, address, dep.id, cors)

    def in_flight(self, deployment_id: str) -> int:
        """A deployment's requests the worker reported started and not yet ended."""
        return self._in_flight.get(deployment_id, 0)

    @property
    def held(self) -> int:
        """How many connections the worker holds now."""
        return len(self._held)

    def on_frame(self, frame: dict[str, Any]) -> None:
        """A report of the worker's about a connection it holds."""
        conn_id = int(frame["conn"])
        held = self._held.get(conn_id)
        if held is None:
            return
        dep = self.gateway.supervisor.deployments.get(held.deployment_id)
        if frame.get("started"):
            held.in_request = True
            self._in_flight[held.deployment_id] = self._in_flight.get(held.deployment_id, 0) + 1
            if dep is not None:
                self.gateway.supervisor.request_started(dep)
            return
        failed = frame.get("failed")
        refusal = relay_refusal(failed) if failed else None
        if "record" in frame:
            self._record(held, dep, frame["record"], refusal)
        if not (refusal is not None or frame.get("back") or frame.get("closed")):
            return
        del self._held[conn_id]
        self._ended(held, dep)  # a request the worker never reported the end of ends with its connection
        if refusal is not None:
            if dep is not None and dep.replicas and failed.get("outcome") == "unreachable":
                self.gateway.supervisor.replica_unreachable(dep, dep.replicas[0], str(failed.get("message")))
            self._answer(held, refusal, bool(frame.get("keep_alive")))
        elif frame.get("back"):
            take_back(self.gateway.config.http_server, held.sock, held.address, True)
        else:
            held.sock.close()

    def _ended(self, held: Held, dep: Deployment | None) -> None:
        if held.in_request:
            held.in_request = False
            self._in_flight[held.deployment_id] = max(0, self._in_flight.get(held.deployment_id, 0) - 1)
            if dep is not None:
                self.gateway.supervisor.request_finished(dep)

    def _record(self, held: Held, dep: Deployment | None, record: dict[str, Any], refusal: Refusal | None) -> None:
        self._ended(held, dep)
        self.served += 1
        key_id = str(record.get("key_id"))
        try:
            self.gateway.tokens.touch(self.gateway.tokens.get(key_id), time.time())
        except KeyError:
            pass  # the fixed key, or none
        usage = record.get("usage")
        self.gateway.observe(RequestRecord(
            deployment_id=held.deployment_id, model=record.get("model"),
            status=refusal.status if refusal is not None else int(record.get("status") or 502),
            latency_s=float(record.get("latency_s") or 0.0), first_chunk_s=record.get("first_chunk_s"),
            usage=Usage(*usage) if usage else None, streamed=bool(record.get("streamed")), key_id=key_id,
            method=str(record.get("method")), path=str(record.get("path")),
        ))

    def _answer(self, held: Held, refusal: Refusal, keep_alive: bool) -> None:
        """Write the error the worker could not get an answer for, then serve the connection again."""
        task = asyncio.ensure_future(answer_and_take_back(
            self.gateway.config.http_server, held.sock, held.address,
            refusal_answer(refusal, held.cors, keep_alive=keep_alive), keep_alive))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def settled(self) -> None:
        """Count now every request the worker answered under a lease (for readers of usage, metrics and
        the concurrency limit): its report is in the channel before its client has the answer."""
        self.relay.drain()

    def drop_all(self) -> None:
        """The worker is gone: the connections it held close (their requests in flight end as cut)."""
        held, self._held = self._held, {}
        for conn in held.values():
            self._ended(conn, self.gateway.supervisor.deployments.get(conn.deployment_id))
            conn.sock.close()
