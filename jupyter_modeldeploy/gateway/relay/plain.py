"""The gateway worker's plain requests: admitted, sent and answered in callbacks, without a task.

Most endpoint traffic is plain: a small request read whole, admitted with nothing to wait for (no
wake, no waiting line, no body capture), not asking for a stream, sent to a replica that has a kept
engine connection free, whose answer then arrives whole. Such a request is decided by the one
admission (`admission`), written to the engine in the callback that read its last byte, and answered
in the callback that brings the engine's answer: the same head (`exchange.pass_head`), usage, record
and counts as the exchange gives it, but no task, coroutine chain or timer per request.

Whatever is not plain is the exchange's (`exchange.EndpointExchange`). A request that cannot be
plain is never started here; one whose answer turns out not to be plain (an error, a stream, a body
still coming, a client gone meanwhile) is adopted by an exchange from the point it reached
(`EndpointExchange.adopt`), so there is one relay for everything but the plain answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from ...supervisor.replicas import pick
from .. import admission
from ..admission import Admission, Claim, RequestHead
from ..exchange import EndpointExchange, Sent, engine_target, pass_head, with_engine_key
from ..failover import left_for_a_failure
from ..header_index import HeaderIndex
from ..headers import request_headers
from ..records import RequestRecord
from ..refusals import Refusal
from ..upstream import PendingAnswer, UpstreamResponse
from ..usage import UsageTap
from .wire import ConnectionWire, WireHost
from .worker_gateway import WorkerGateway

log = logging.getLogger("jupyter_modeldeploy.gateway_worker")


class PlainHost(WireHost, Protocol):
    """The connection a plain request came on: where its answer goes, and what it is told when the request ends."""

    def plain_done(self, keep_alive: bool) -> None: ...

    def plain_adopted(self, exchange: EndpointExchange, answer: Coroutine[Any, Any, None]) -> None: ...

    def plain_failed(self) -> None: ...


class PlainRequest:
    """One plain request under way: sent, its answer to come (see the module's docstring)."""

    __slots__ = ("_body", "_claim", "_door", "_found", "_gateway", "_head", "_headers", "_host", "_http_11", "_keep_alive",
                 "_loaded", "_over", "_pending", "_replica", "_started", "_unwatch")

    def __init__(self, host: PlainHost, gateway: WorkerGateway, head: RequestHead, headers: HeaderIndex, door: str,
                 http_11: bool, keep_alive: bool, found: Admission, claim: Claim, replica: Any, body: bytes,
                 pending: PendingAnswer, started: float):
        self._host, self._gateway, self._head, self._headers, self._door = host, gateway, head, headers, door
        self._http_11, self._keep_alive = http_11, keep_alive
        self._found, self._claim, self._replica, self._pending = found, claim, replica, pending
        self._body = body  # as the engine was sent it: sent again as it is if the exchange goes to another replica
        self._started = started  # time.perf_counter() when it was read whole
        self._over = False  # answered, or adopted by an exchange
        self._loaded = True  # counted in its replica's load
        # With other replicas to go to, one that leaves the rotation while the request waits there gives it up:
        # the exchange takes it over and sends it elsewhere (`failover.head_unless_lost`).
        self._unwatch = replica.watch(self._replica_changed) if len(found.dep.replicas) > 1 else None
        pending.head.add_done_callback(self._answered)

    def _replica_changed(self, replica: Any) -> None:
        if left_for_a_failure(replica):
            self._adopt()

    def _over_now(self) -> None:
        """Answered here, or from now on the exchange's: no more watching its replica."""
        self._over = True
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None

    def client_gone(self) -> None:
        """The client left before its answer: the exchange sees the request out (the engine is told)."""
        self._adopt(client_gone=True)

    def _wire(self) -> ConnectionWire:
        return ConnectionWire(self._host, self._head.method, self._http_11, self._keep_alive)

    def _answered(self, head: Any) -> None:
        """The engine's answer's head came (or will not): answered here when it is whole, else adopted."""
        if self._over:
            return
        try:
            self._answer(head)
        except Exception:  # never leave a client waiting on a broken request
            log.exception("a plain request failed in the gateway worker")
            self._over_now()
            self._claim.release(0, time.time())  # (once: a no-op if it was given back)
            if self._loaded:
                self._loaded = False
                self._gateway.replica_load(self._found.dep, self._replica, -1)
            self._host.plain_failed()

    def _answer(self, head: Any) -> None:
        upstream: UpstreamResponse | None = None if head.cancelled() or head.exception() else head.result()
        content_type = upstream.headers.get("Content-Type", "") if upstream is not None else ""
        body = None
        if upstream is not None and not content_type.startswith("text/event-stream"):
            body = upstream.whole_body()
        if upstream is None or body is None:
            self._adopt()
            return
        self._over_now()
        self._pending.settled()
        found, gateway, replica = self._found, self._gateway, self._replica
        dep = found.dep
        assert dep is not None
        self._loaded = False
        gateway.replica_load(dep, replica, -1)
        wire = self._wire()
        try:
            pass_head(wire, upstream, found.cors)
        except ValueError as exc:  # a header value the server will not send: the exchange refuses it
            wire = self._wire()
            exchange = EndpointExchange(gateway, wire, self._head, self._headers, self._door)
            exchange.refuse_adopted(found, self._claim, replica.id, Refusal(
                502, f"the engine's answer could not be passed on: {exc}", "upstream_error"))
            self._host.plain_done(wire.keep_alive)
            return
        tap = UsageTap(content_type, read_json=self._head.method not in ("GET", "HEAD"))
        body = tap.feed(body) + tap.close()
        usage = tap.finish()
        latency = time.perf_counter() - self._started
        self._claim.release(usage.total if usage else 0, time.time())
        record = RequestRecord(dep.id, found.model_label(), upstream.status, latency, latency, usage,
                               key_id=found.key_id, method=self._head.method, path=found.engine_path,
                               door=self._door, replica=replica.id)
        gateway.observe(record, claimed=True)
        # Counted: now the answer, whose last byte tells its client it ended.
        wire.send(body)
        wire.finish()
        self._host.plain_done(wire.keep_alive)

    def _adopt(self, client_gone: bool = False) -> None:
        """An exchange takes the request over from here (waiting for the engine's answer on)."""
        if self._over:
            return
        self._over_now()
        exchange = EndpointExchange(self._gateway, self._wire(), self._head, self._headers, self._door)
        sent = Sent(self._replica, self._body, self._pending, self._started)
        answer = exchange.adopt(self._found, self._claim, sent)
        if client_gone:
            exchange.connection_closed()
        self._host.plain_adopted(exchange, answer)


def start(host: PlainHost, gateway: WorkerGateway, head: RequestHead, headers: HeaderIndex, body: bytes, door: str,
          http_11: bool, keep_alive: bool) -> PlainRequest | None:
    """Admit a whole request and send it, if it is plain (see the module's docstring); None (nothing claimed,
    sent or answered) when it is not, and the exchange serves it from the start."""
    started = time.perf_counter()
    gateway.settle()  # every change published before this request was sent is in force
    now = time.time()
    found = admission.admit(head, gateway, now)
    dep = found.dep
    if found.refusal is not None or found.wake or dep is None or dep.plan is None or dep.config.capture_bodies:
        return None
    limit = dep.plan.max_concurrent_requests
    line = gateway.line(dep)
    if line.depth or (limit is not None and dep.in_flight >= limit) or len(body) > found.body_limit:
        return None  # it would wait in the line, or be refused for its size: the exchange's
    admitted = admission.admit_body(found, body, headers.get("Content-Type", ""), head.method)
    if admitted.refusal is not None or admitted.stream or admitted.injected:
        return None
    replica = pick(dep.replicas)
    address = replica.address if replica is not None else None
    upstream = gateway.upstream
    connection = upstream.take_idle(address) if address is not None else None
    if replica is None or address is None or connection is None:
        return None  # no engine connection free to send it on now: the exchange connects
    if found.key is not None:
        gateway.touch(found.key, now)
    claim = admission.take(found, started=gateway.request_started, finished=gateway.request_finished,
                           quotas=gateway.quotas, now=now, line=line)
    if isinstance(claim, Refusal):
        upstream.put_back(connection)
        return None  # past a quota: the exchange answers (the same refusal: taking it claimed nothing)
    pending = upstream.send_kept(address, connection, head.method, engine_target(found),
                                 with_engine_key(request_headers(headers.get_all()), replica), admitted.body,
                                 timeout=gateway.config.upstream_timeout_s)
    gateway.replica_load(dep, replica, +1)
    replica.requests += 1
    return PlainRequest(host, gateway, head, headers, door, http_11, keep_alive, found, claim, replica, admitted.body,
                        pending, started)
