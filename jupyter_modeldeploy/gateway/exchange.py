"""One endpoint request and its answer, whatever HTTP server carries it.

The gateway serves endpoint requests on two HTTP servers: tornado's, in the Jupyter server (the
first request's head, and the connections no worker can take), and the gateway worker's own
(`relay.connection`), which owns endpoint traffic. Both drive the same `EndpointExchange`: the
one admission (`admission`) decides from the request line and headers before the body is read and
claims the request's concurrency slot and quota place in the same step; the body is then read up to
the limit, admitted (model, limits, model scope), and the request forwarded with the engine's
private key to the serving replica with the fewest in flight. The answer streams back chunk by
chunk as it arrives; its end is written only once the request is counted (`answer_end`).

An exchange writes its answer through a `Wire` (status, headers, body bytes, flush, finish), which
each server implements over its own connection; its `gateway` (`core.GatewayCore`) is that
process's state and counters. It does not know which server or process it runs in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from ..supervisor.replicas import Replica, pick
from . import admission
from .admission import DRAIN_LIMIT, Admission, Claim, RequestHead
from .answer_end import AnswerEnd
from .core import GatewayCore
from .failover import cut_stream_event, end_with_its_engine, error_event, head_unless_lost, resend_elsewhere
from .headers import request_headers, returned_header
from .records import CAPTURE_SLACK, Capture, RequestRecord
from .refusals import Refusal, refusal_document
from .upstream import PendingAnswer, UpstreamError, UpstreamResponse, UpstreamTimeout
from .usage import Usage, UsageTap

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 0.005  # streamed bytes reach the client within 5 ms, in batches (see StreamFlusher)
ERROR_BODY_LIMIT = 65536  # of an engine's error answer, passed on as a held stream's error event
HEARTBEAT_S = 5.0  # a stream waiting in the line gets an SSE comment this often (clients and proxies keep it)


class Headers(Protocol):
    """A request's headers as a server hands them over: looked up without regard to case, and every pair."""

    def get(self, name: str, default: Any = None) -> Any: ...

    def get_all(self) -> Iterable[tuple[str, str]]: ...

    def __contains__(self, name: object) -> bool: ...


class Wire(Protocol):
    """The answer as an HTTP server writes it: tornado's `RequestHandler` names, which the worker's connection
    implements too. `send` writes body bytes as they are; `abort` ends the connection without a clean end."""

    def set_status(self, status_code: int, reason: str | None = None) -> None: ...

    def get_status(self) -> int: ...

    def set_header(self, name: str, value: Any) -> None: ...

    def add_header(self, name: str, value: Any) -> None: ...

    def clear_header(self, name: str) -> None: ...

    def clear(self) -> None: ...

    def send(self, chunk: bytes) -> None: ...

    def flush(self) -> Awaitable[None]: ...

    def finish(self) -> Any: ...

    def abort(self) -> None: ...

    @property
    def finished(self) -> bool: ...

    @property
    def headers_written(self) -> bool: ...


class WireFlags:
    """The two flags of a `Wire` as the exchange reads them, over the `_finished` and `_headers_written` that
    tornado's `RequestHandler` keeps (and the worker's connection wire keeps alike)."""

    _finished: bool
    _headers_written: bool

    @property
    def finished(self) -> bool:
        """Whether the answer was finished."""
        return self._finished

    @property
    def headers_written(self) -> bool:
        """Whether the answer's head went out."""
        return self._headers_written


@dataclass
class Relayed:
    """How a forwarded request ended, for its record."""

    status: int
    usage: Usage | None = None
    streamed: bool = False
    first_chunk_s: float | None = None


class StreamFlusher:
    """Sends a streamed answer on in batches: at once for the first bytes, then at most every FLUSH_EVERY_S.

    A fast engine emits thousands of small events a second, and one write per event would take the
    loop from every other request (on the Jupyter server: from every Jupyter request). Bytes
    written in between wait at most FLUSH_EVERY_S (a timer sends them when no more come), and each
    batch is awaited, so a slow client still holds the engine back. Every chunk also yields to the
    loop once, so other requests take turns.
    """

    def __init__(self, wire: Wire):
        self._wire = wire
        self._loop = asyncio.get_running_loop()
        self._last = -1.0
        self._timer: asyncio.TimerHandle | None = None

    async def wrote(self) -> None:
        """Some bytes were written: send them now, or within FLUSH_EVERY_S."""
        now = self._loop.time()
        if now - self._last >= FLUSH_EVERY_S:
            self.cancel()
            self._last = now
            await self._wire.flush()
        elif self._timer is None:
            self._timer = self._loop.call_at(self._last + FLUSH_EVERY_S, self._flush_later)
        # Reads of data already buffered and completed flushes do not yield: without this, a
        # stream faster than the gateway would hold the loop until the engine paused.
        await asyncio.sleep(0)

    def _flush_later(self) -> None:
        self._timer = None
        self._last = self._loop.time()
        if not self._wire.finished:
            sent = asyncio.ensure_future(self._wire.flush())  # bytes that arrived after the last batch
            sent.add_done_callback(lambda f: f.cancelled() or f.exception())  # a client gone: nothing to say

    def cancel(self) -> None:
        """No timer left behind once the answer ends."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@dataclass
class Sent:
    """A request another path admitted and sent: the replica it went to, the body it was sent (what another replica is
    sent if this one fails it), its answer to come, and when it was sent."""

    replica: Replica
    body: bytes
    answer: PendingAnswer
    at: float  # time.perf_counter()


def engine_target(found: Admission) -> str:
    """The request target the engine is sent: the normalised path and the raw query."""
    return f"{found.engine_path}?{found.query}" if found.query else found.engine_path


def with_engine_key(forwarded: list[tuple[str, str]], replica: Replica) -> list[tuple[str, str]]:
    """The client's headers the engine may see (`headers.request_headers`), and the replica's private key."""
    return [*forwarded, ("Authorization", f"Bearer {replica.engine_key}")]


def pass_head(wire: Wire, upstream: UpstreamResponse, cors: dict[str, str], *, drop_length: bool = False) -> None:
    """The engine's status and headers, as the answer's (hop-by-hop ones left out, CORS the deployment's;
    `drop_length`: the body changes on the way, so its length is the server's to frame)."""
    wire.set_status(upstream.status, upstream.reason or None)
    seen: set[str] = set()
    for name, value in upstream.headers.get_all():
        if not returned_header(name):
            continue
        lower = name.lower()
        if lower in seen:
            wire.add_header(name, value)
        else:
            wire.set_header(name, value)  # replaces the server's defaults (Content-Type)
            seen.add(lower)
    for name, value in cors.items():
        wire.set_header(name, value)
    if drop_length:
        wire.clear_header("Content-Length")


class EndpointExchange:
    """One endpoint request: admitted from its head (`admit_head`), its body read (`receive`), answered (`answer`)."""

    def __init__(self, gateway: GatewayCore, wire: Wire, head: RequestHead, headers: Headers, door: str = "jupyter"):
        self.gateway = gateway
        self.wire = wire
        self.head = head
        self.headers = headers
        self.door = door  # how the request came: through the Jupyter server, or the worker's socket or port
        self.admission = Admission()
        self._upstream: UpstreamResponse | None = None
        self._client_gone = False
        self._claim: Claim | None = None  # its concurrency slot and quota place, from admission until recorded
        self._body = bytearray()
        self._started = time.perf_counter()
        self._pending: Refusal | None = None  # a refusal answered once the request's body is read
        self._discard = False  # the body of a refused request is read and dropped (the connection stays)
        self._forwarding = False
        self._observed = False
        self._capture: Capture | None = None  # the bodies, where the deployment captures them
        self._held = b""  # the answer's last bytes, written once the request is counted
        self._replica: str | None = None  # the replica it was last sent to
        self._held_stream = False  # its stream's head went out while it waited: the rest are events
        self._wake_first = False  # its deployment sleeps: woken once the body is read (`_wake`)

    # Before the body: everything the request line and headers decide ----------------------

    async def admit_head(self) -> None:
        """Admit the request from its head; a refusal is answered now or once its (small) body is read."""
        refusal = await self._admit()
        if refusal is None:
            return
        if not self._has_body():
            self._pending = refusal  # answered once the (empty) request is complete: keep-alive holds
        elif self._drainable():
            self._pending, self._discard = refusal, True  # a small body is read and dropped: keep-alive holds
        else:
            refusal.close = True  # the body is not read: the client is told the connection ends
            self._refuse(refusal)

    def _has_body(self) -> bool:
        headers = self.headers
        return "Transfer-Encoding" in headers or headers.get("Content-Length", "0") not in ("", "0")

    def _drainable(self) -> bool:
        """A refused request's body is small enough to read and drop (and nobody waits for `100 Continue`)."""
        headers = self.headers
        length = headers.get("Content-Length", "")
        return ("Transfer-Encoding" not in headers and "Expect" not in headers and length.isdigit()
                and int(length) <= DRAIN_LIMIT)

    def receive(self, chunk: bytes) -> None:
        """A piece of the request's body: kept up to the route's limit (past it: 413, and the connection ends)."""
        if self.wire.finished or self._discard:
            return
        limit = self.admission.body_limit
        if len(self._body) + len(chunk) > limit:
            self._refuse(Refusal(413, f"request body exceeds the limit of {limit} bytes", "invalid_request_error",
                                 close=True))
            return
        self._body += chunk

    async def _admit(self) -> Refusal | None:
        """The one admission (`admission`): decided from the head, a sleeping engine woken for a valid key,
        then the request's places claimed in the step that checks them."""
        gateway = self.gateway
        head = self.head
        gateway.settle()  # every change published before this request was sent is in force
        now = time.time()
        found = self.admission = admission.admit(head, gateway, now)
        if found.wake and found.dep is not None:
            if found.body_limit:
                # A sleeping engine, or one parked to free memory, comes back for a caller with a valid key, once
                # its body is read (`_wake`): a stream is held with heartbeats meanwhile.
                self._wake_first = True
                if found.key is not None:
                    gateway.touch(found.key, now)
                return None
            await gateway.wake(found.dep)  # no plan to read the body by yet: woken first
            gateway.settle()
            now = time.time()
            found = self.admission = admission.admit(head, gateway, now)
        return self._claim_places(now)

    def _claim_places(self, now: float) -> Refusal | None:
        """The admitted request's places (`admission.take`), or why it is refused."""
        gateway, found = self.gateway, self.admission
        if found.key is not None:
            gateway.touch(found.key, now)
        if found.refusal is not None:
            return found.refusal
        claim = admission.take(found, started=gateway.request_started, finished=gateway.request_finished,
                               quotas=gateway.quotas, now=now, line=gateway.line(found.dep))
        if isinstance(claim, Refusal):
            return claim
        self._claim = claim
        return None

    async def _wake(self, stream: bool) -> bool:
        """Wake the sleeping deployment, then admit the request again and claim its places; a stream gets its
        head at once and an SSE comment every HEARTBEAT_S while the engine comes back. False: it will not be sent
        (its client left, or it was refused, and that is written)."""
        gateway, dep = self.gateway, self.admission.dep
        assert dep is not None
        if stream:
            await self._open_held_stream(b"waking the deployment")
        waking = asyncio.ensure_future(gateway.wake(dep))
        waking.add_done_callback(lambda done: done.cancelled() or done.exception())  # read, even if nobody waits
        if not await self._held_until(waking, lambda: b"waking the deployment (%s)" % dep.status.value.encode()):
            return False  # its client left; the wake goes on: the next caller finds the engine up
        if not waking.cancelled() and waking.exception() is not None:
            log.warning("waking deployment %s failed: %s", dep.id, waking.exception())
        gateway.settle()
        self.admission = admission.admit(self.head, gateway, time.time())
        refusal = self._claim_places(time.time())
        if refusal is not None:
            self._refuse(refusal)
            return False
        return True

    # The answer's bytes ----------------------------------------------------------------------

    def _write(self, chunk: bytes) -> None:
        """Every byte of the answer passes here: kept for the request log where the deployment captures bodies."""
        if self._capture is not None:
            self._capture.keep(chunk)
        self.wire.send(chunk)

    def refusal_body(self, status: int, message: str) -> bytes:
        """An error the server raised itself (a bad request line...), in the route's dialect."""
        kind = "invalid_request_error" if status < 500 else "server_error"
        return json.dumps(refusal_document(Refusal(status, message, kind), self.admission.dialect)).encode()

    def _start_capture(self, dep: Any) -> None:
        limit = dep.config.capture_max_bytes
        authorization = self.headers.get("Authorization")
        secrets = tuple(s for s in (self.admission.presented, dep.engine_key, authorization) if s)
        self._capture = Capture(limit, bytes(self._body[: limit + CAPTURE_SLACK]), secrets=secrets)

    def release(self, tokens: int = 0) -> None:
        """Give the request's concurrency slot and quota place back (once; `tokens` count in its key's quotas)."""
        if self._claim is not None:
            self._claim.release(tokens, time.time())

    def connection_closed(self) -> None:
        """The client went away."""
        self._client_gone = True
        if not self._forwarding:
            self.release(0)  # gone before its body was read: nothing else will give its places back
        if self._upstream is not None:
            # Closing the upstream connection tells the engine the client left: it stops work.
            self._upstream.close()

    def _observe(self, record: RequestRecord) -> None:
        """A finished request: its places given back, then its record, once (an error answered while
        forwarding is not counted again when the forwarding ends). Called before the answer's end is
        written: by the time its client can tell the answer ended, the request is counted."""
        self.release(record.usage.total if record.usage else 0)
        record.method, record.path, record.capture = self.head.method, self.admission.engine_path, self._capture
        record.door, record.replica = self.door, self._replica
        if not self._observed:
            self._observed = True
            self.gateway.observe(record, claimed=self._claim is not None)

    def _refuse(self, refusal: Refusal) -> None:
        found = self.admission
        wire = self.wire
        if self._held_stream:  # the stream's head is out: the refusal is its one event
            self._record_refusal(refusal, error_event(refusal, found.dialect))
            return
        wire.set_status(refusal.status)
        for name, value in {**found.cors, **refusal.headers}.items():
            wire.set_header(name, value)
        if refusal.close:
            wire.set_header("Connection", "close")
        body = b""
        if refusal.status != 204:
            wire.set_header("Content-Type", "application/json")
            body = json.dumps(refusal_document(refusal, found.dialect)).encode()
        self._record_refusal(refusal, body)

    def _record_refusal(self, refusal: Refusal, body: bytes) -> None:
        """A refusal's record (for a deployment), then its body and the answer's end."""
        found = self.admission
        dep = found.dep
        if dep is not None and refusal.kind:
            if self._capture is not None:
                self._capture.keep(body)
            self._observe(RequestRecord(dep.id, found.model_label(), refusal.status,
                                        time.perf_counter() - self._started, key_id=found.key_id))
        self._end(body)

    def _end(self, rest: bytes) -> None:
        """Write the answer's last bytes (already kept for the request log) and finish it."""
        if rest:
            self.wire.send(rest)
        self.wire.finish()

    # After the body ----------------------------------------------------------------------

    async def answer(self) -> None:
        """The body is read: admit it, forward it, pass the answer on; the request's places go back whatever happens."""
        try:
            await self._answer()
        finally:
            self.release(0)  # a no-op once recorded

    async def _answer(self) -> None:
        if self._pending is not None:
            self._refuse(self._pending)
        found = self.admission
        dep = found.dep
        if self.wire.finished or dep is None:
            return
        if dep.config.capture_bodies:
            self._start_capture(dep)
        admitted = admission.admit_body(found, bytes(self._body), self.headers.get("Content-Type", ""),
                                        self.head.method)
        if admitted.refusal is not None:
            self._refuse(admitted.refusal)
            return
        if self._wake_first:
            if not await self._wake(admitted.stream):
                return
            found, dep = self.admission, self.admission.dep
            assert dep is not None
            admitted = admission.admit_body(found, bytes(self._body), self.headers.get("Content-Type", ""),
                                            self.head.method)  # the models may have changed while it slept
            if admitted.refusal is not None:
                self._refuse(admitted.refusal)
                return
        if self._claim is not None and self._claim.waiting and not await self._wait_for_slot(admitted.stream):
            return
        self._forwarding = True
        await self._forward_recorded(dep, admitted.body, admitted.injected)

    def adopt(self, found: Admission, claim: Claim, sent: Sent) -> Coroutine[Any, Any, None]:
        """Go on with a request another path admitted, claimed and sent (the worker's plain path, when the
        answer is not plain), from waiting for the engine's answer on, as `answer` goes on; the coroutine to run.
        The exchange owns the request's places from this call on."""
        self.admission, self._claim, self._forwarding, self._started = found, claim, True, sent.at
        return self._adopted(sent)

    def refuse_adopted(self, found: Admission, claim: Claim, replica: str, refusal: Refusal) -> None:
        """Refuse a request another path admitted, claimed and sent to `replica`, whose answer it could not pass
        on: answered, recorded, its places given back."""
        self.admission, self._claim, self._forwarding, self._replica = found, claim, True, replica
        self._refuse(refusal)
        self.release(0)

    async def _adopted(self, sent: Sent) -> None:
        dep = self.admission.dep
        assert dep is not None
        try:
            await self._forward_recorded(dep, sent.body, False, sent)  # (the plain path sends no usage request)
        finally:
            self.release(0)

    async def _forward_recorded(self, dep: Any, body: bytes, injected: bool, sent: Sent | None = None) -> None:
        """Forward the request, then record it; the answer's end goes once it is counted."""
        found = self.admission
        relayed = Relayed(502)
        try:
            relayed = await self._forward(dep, body, injected, sent)
        finally:
            if self._capture is not None:
                self._capture.keep(self._held)
            self._observe(
                RequestRecord(
                    deployment_id=dep.id, model=found.model_label(), status=relayed.status,
                    latency_s=time.perf_counter() - self._started, first_chunk_s=relayed.first_chunk_s,
                    usage=relayed.usage, streamed=relayed.streamed, key_id=found.key_id,
                )
            )
        # Counted: now the bytes by which the client can tell its answer ended.
        if not self.wire.finished and not self._client_gone:
            self._end(self._held)

    async def _wait_for_slot(self, stream: bool) -> bool:
        """Wait for the request's turn in its deployment's line, up to `queue_timeout_s` from when it joined;
        a stream gets its head at once and an SSE comment every HEARTBEAT_S. False: it will not be sent (its
        client left, or the wait ran out and the 429 is written)."""
        claim, dep = self._claim, self.admission.dep
        assert claim is not None and claim.turn is not None and dep is not None
        turn, line = claim.turn, self.gateway.line(dep)
        timeout = dep.config.queue_timeout_s
        deadline = turn.enqueued_at + timeout
        def waiting() -> bytes:
            return b"waiting for a slot, %d in the queue" % line.depth

        if stream:
            await self._open_held_stream(waiting())
        if await self._held_until(turn.granted, waiting, deadline) or self._client_gone:
            return not self._client_gone
        self.release(0)  # out of the line
        line.reject()
        limit = dep.plan.max_concurrent_requests if dep.plan is not None else None
        self._refuse(Refusal(429, f"waited {timeout:g} s in the queue for a slot (max_concurrent_requests="
                             f"{limit}, queue_timeout_s={timeout:g})", "rate_limit_error",
                             headers={"Retry-After": "1"}))
        return False

    async def _held_until(self, done: asyncio.Future[Any], comment: Callable[[], bytes],
                          deadline: float = math.inf) -> bool:
        """Wait for `done` up to `deadline` (monotonic), an SSE comment (`comment()`) every HEARTBEAT_S to a held
        stream meanwhile; False when the client left or the deadline passed first."""
        while not done.done() and not self._client_gone:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            finished, _ = await asyncio.wait((done,), timeout=min(HEARTBEAT_S, left))
            if not finished and self._held_stream and not self._client_gone:
                self.wire.send(b": " + comment() + b"\n\n")
                await self.wire.flush()
        return done.done() and not self._client_gone

    async def _open_held_stream(self, comment: bytes) -> None:
        """Send a stream's head and a first SSE comment while it waits: the engine's own head will not be sent."""
        wire = self.wire
        if not self._held_stream:
            wire.set_status(200)
            wire.set_header("Content-Type", "text/event-stream")
            wire.set_header("Cache-Control", "no-cache")
            for name, value in self.admission.cors.items():
                wire.set_header(name, value)
            self._held_stream = True
        wire.send(b": " + comment + b"\n\n")
        await wire.flush()

    async def _send(self, dep: Any, body: bytes, sent: Sent | None) -> tuple[UpstreamResponse | None,
                                                                             Replica | None]:
        """Send the request to the serving replica with the fewest in flight (or, `sent`, wait for the answer of
        the one it went to); one that fails it before any byte of an answer (`failover.resend_elsewhere`: not
        connected to, or the connection ended before the head) leaves the rotation and the next takes the request.
        Refused: (None, None)."""
        gateway = self.gateway
        headers = request_headers(self.headers.get_all())
        target = engine_target(self.admission)
        tried: set[str] = set()
        while True:
            request: Coroutine[Any, Any, UpstreamResponse]
            if sent is not None:
                replica, request, sent = sent.replica, sent.answer.answer(), None
            else:
                picked = pick(dep.replicas, tried)
                if picked is None or picked.address is None:
                    self._refuse(Refusal(503, f"no replica of deployment {dep.name!r} is serving",
                                         "unavailable_error", headers={"Retry-After": "5"}))
                    return None, None
                replica = picked
                gateway.replica_load(dep, replica, +1)
                replica.requests += 1
                request = gateway.upstream.request(replica.address, self.head.method, target,
                                                   with_engine_key(headers, replica), body,
                                                   timeout=gateway.config.upstream_timeout_s)
            tried.add(replica.id)
            self._replica = replica.id
            try:
                # With other replicas to go to, a replica lost while the request waits gives it up.
                upstream = await (head_unless_lost(request, replica) if len(dep.replicas) > 1 else request)
            except UpstreamError as exc:
                gateway.replica_load(dep, replica, -1)
                if resend_elsewhere(exc):  # no byte of an answer came: the replica leaves, another takes it
                    gateway.replica_unreachable(dep, replica, str(exc))
                    if len(dep.replicas) > 1:
                        continue
                if isinstance(exc, UpstreamTimeout):
                    self._refuse(Refusal(504, f"the engine did not answer: {exc}", "timeout_error"))
                else:
                    self._refuse(Refusal(502, f"the engine could not be reached: {exc}", "upstream_error"))
                return None, None
            return upstream, replica

    async def _forward(self, dep: Any, body: bytes, injected: bool, sent: Sent | None) -> Relayed:
        started = sent.at if sent is not None else time.perf_counter()
        upstream, replica = await self._send(dep, body, sent)
        if upstream is None or replica is None:
            return Relayed(self.wire.get_status())
        unwatch = end_with_its_engine(upstream, replica)
        try:
            status, tap, first_chunk = await self._relay(upstream, injected, started)
        finally:
            unwatch()
            self.gateway.replica_load(dep, replica, -1)
        return Relayed(status, tap.finish() if tap else None, bool(tap and tap.is_sse), first_chunk)

    async def _engine_error_event(self, upstream: UpstreamResponse) -> int:
        """An error the engine answered to a stream whose head went out already: its document as the one event."""
        kept = bytearray()
        async for chunk in upstream.iter_body():
            kept += chunk
            if len(kept) > ERROR_BODY_LIMIT:  # an error document is small: the rest is not read
                upstream.close()
                break
        body = bytes(kept[:ERROR_BODY_LIMIT])
        try:
            document = json.loads(body)
        except ValueError:
            document = {"error": {"message": body.decode("utf-8", "replace"), "type": "upstream_error"}}
        self._held = b"data: " + json.dumps(document).encode() + b"\n\n"
        return upstream.status

    async def _relay(self, upstream: UpstreamResponse, injected: bool, started: float) -> tuple[int, UsageTap | None,
                                                                                                 float | None]:
        """Pass the engine's answer on, head then body chunk by chunk, reading usage on the way."""
        self._upstream = upstream
        if self._client_gone:
            upstream.close()
            return upstream.status, None, None
        wire = self.wire
        first_chunk: float | None = None
        tap = UsageTap(upstream.headers.get("Content-Type", ""), drop_injected_usage=injected,
                       read_json=self.head.method not in ("GET", "HEAD"))
        streaming = tap.is_sse or "Content-Length" not in upstream.headers
        between_events = True  # what went so far ends with a whole event (a cut stream's error event may follow)
        try:
            if self._held_stream:  # its head went out while it waited: the engine's answer goes on as events
                if upstream.status >= 300:
                    return await self._engine_error_event(upstream), tap, first_chunk
            else:
                pass_head(wire, upstream, self.admission.cors, drop_length=tap.drop_injected_usage)
            flusher = StreamFlusher(wire) if streaming else None
            # A body of known length and the last chunk go out in finish(), in the turn that counts
            # the request (`answer`); a stream's `[DONE]` would go before: it waits for finish() too.
            end = AnswerEnd(sse=tap.is_sse, body_length=None)
            async for chunk in upstream.iter_body():
                if self._client_gone:
                    upstream.close()
                    break
                if first_chunk is None:
                    first_chunk = time.perf_counter() - started
                out = end.pass_on(tap.feed(chunk))
                if out:
                    between_events = out.endswith(b"\n\n")
                    self._write(out)
                    if flusher is not None:
                        await flusher.wrote()
            if flusher is not None:
                flusher.cancel()
        except (UpstreamError, OSError) as exc:  # OSError: the client's connection broke (tornado's StreamClosedError too)
            upstream.close()
            if isinstance(exc, UpstreamTimeout) and not wire.headers_written:
                wire.clear()
                self._refuse(Refusal(504, "the engine stopped answering", "timeout_error"))
                return 504, tap, first_chunk
            if tap.is_sse and isinstance(exc, UpstreamError) and not self._client_gone:
                # A stream the engine broke off: an error event, then the stream's clean end (`answer`).
                self._held = (b"" if between_events else b"\n\n") + cut_stream_event(str(exc), self.admission.dialect)
                return 502, tap, first_chunk
            self._client_gone = True
            wire.abort()  # a cut answer must look cut
            return upstream.status, tap, first_chunk
        except ValueError as exc:  # a header value the server will not send
            upstream.close()
            wire.clear()
            self._refuse(Refusal(502, f"the engine's answer could not be passed on: {exc}", "upstream_error"))
            return 502, tap, first_chunk
        finally:
            self._upstream = None
        if not self._client_gone:
            self._held = end.pass_on(tap.close()) + end.release()[1]  # written once the request is counted
        return upstream.status, tap, first_chunk
