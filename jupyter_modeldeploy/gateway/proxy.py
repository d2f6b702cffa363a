"""The gateway: `/modeldeploy/endpoints/<route>/...` to the deployment's engine.

A plain tornado handler (no Jupyter login: callers present a deployment key). It decides
nothing itself: the one admission (`admission`) decides from the request line and headers
before the body is read (`prepare`) and claims the request's concurrency slot and quota place in
the same step; the body is then read up to the limit, admitted (model, limits, model scope), and
the request forwarded on a pooled connection with the engine's private key. The answer streams
back chunk by chunk as it arrives, on this loop or, for a streamed answer, from the relay worker.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tornado import httputil, iostream, web
from tornado.httpserver import HTTPServer

from ..supervisor import Deployment, Supervisor
from ..supervisor.keys import hash_key
from ..supervisor.replicas import Replica, pick
from ..supervisor.tokens import TokenInfo, TokenRegistry
from . import admission
from .admission import DRAIN_LIMIT, Admission, Claim, RequestHead
from .answer_end import AnswerEnd
from .detached import answer_and_take_back, lift, take_back
from .headers import request_headers, returned_header
from .quotas import QuotaBook
from .records import CAPTURE_SLACK, Capture, RequestRecord
from .refusals import Refusal, refusal_answer, refusal_document, relay_refusal
from .relay.pool import StreamRelay
from .relay.protocol import Ended, Job, Outcome
from .response_head import http_date
from .upstream import UpstreamClient, UpstreamError, UpstreamResponse, UpstreamTimeout, UpstreamUnreachable
from .usage import Usage, UsageTap

log = logging.getLogger(__name__)

DEFAULT_PAYLOAD_LIMIT = 16 << 20
FLUSH_EVERY_S = 0.005  # streamed bytes reach the client within 5 ms, in batches (see StreamFlusher)
#: The handler's URL pattern: no capture groups, so tornado never decodes any part of the path.
ENDPOINT_PATTERN = r"/modeldeploy/endpoints/.+"


@dataclass
class Relayed:
    """How a forwarded request ended, for its record."""

    status: int
    usage: Usage | None = None
    streamed: bool = False
    first_chunk_s: float | None = None
    # What is left to do once the request is recorded (the relay worker writes the answer's end).
    after_record: Callable[[], Awaitable[None]] | None = None


@dataclass
class GatewayConfig:
    """Gateway settings (from the extension's traitlets)."""

    upstream_timeout_s: float = 600.0
    connect_timeout_s: float = 10.0
    default_payload_limit: int = DEFAULT_PAYLOAD_LIMIT
    wake: Callable[[Deployment], Awaitable[None]] | None = None  # wakes a sleeping engine
    observers: list[Callable[[RequestRecord], None]] = field(default_factory=list)
    stream_relay: bool = False  # streamed answers pass through the relay worker process (relay.worker)
    # The tornado server that serves a connection again once the relay worker answered on it.
    http_server: Callable[[], HTTPServer] | None = None


class Gateway:
    """Shared state of every endpoint handler: the supervisor, tokens and the upstream client; what
    admission reads of them (`admission.AdmissionState`)."""

    def __init__(self, supervisor: Supervisor, tokens: TokenRegistry, config: GatewayConfig | None = None):
        self.supervisor = supervisor
        self.tokens = tokens
        self.config = config or GatewayConfig()
        self.quotas = QuotaBook()
        self.upstream = UpstreamClient(connect_timeout=self.config.connect_timeout_s)
        self.relay = StreamRelay() if self.config.stream_relay and StreamRelay.supported() else None

    @property
    def default_payload_limit(self) -> int:
        return self.config.default_payload_limit

    def by_route(self, route: str) -> Deployment | None:
        """The deployment at an endpoint route."""
        return self.supervisor.by_route(route)

    def lookup(self, key: str) -> TokenInfo | None:
        """A generated key's info by its value."""
        return self.tokens.lookup(key)

    def observe(self, record: RequestRecord) -> None:
        """Hand a finished request to every observer."""
        for observer in self.config.observers:
            observer(record)

    def key_belongs_elsewhere(self, key: str, dep: Deployment) -> bool:
        """Whether a key is the fixed key of another deployment (so the answer is 403, not 401)."""
        digest = hash_key(key)  # once, not once per deployment
        return any(d.api_key_hash is not None and hmac.compare_digest(digest, d.api_key_hash)
                   for d in self.supervisor.deployments.values() if d.id != dep.id)

    async def close(self) -> None:
        """Close the upstream pools and the relay worker."""
        await self.upstream.close()
        if self.relay is not None:
            await self.relay.close()


class StreamFlusher:
    """Sends a streamed answer on in batches: at once for the first bytes, then at most every FLUSH_EVERY_S.

    Each flush is a write to the client's socket on the Jupyter server's own event loop; a fast
    engine emits thousands of small events a second, and one flush per event would take the loop
    from every other Jupyter request. Bytes written in between wait at most FLUSH_EVERY_S (a
    timer sends them when no more come), and each batch is awaited, so a slow client still
    holds the engine back. Every chunk also yields to the loop once, so other requests take turns.
    """

    def __init__(self, handler: web.RequestHandler):
        self._handler = handler
        self._loop = asyncio.get_running_loop()
        self._last = -1.0
        self._timer: asyncio.TimerHandle | None = None

    async def wrote(self) -> None:
        now = self._loop.time()
        if now - self._last >= FLUSH_EVERY_S:
            self.cancel()
            self._last = now
            await self._handler.flush()
        elif self._timer is None:
            self._timer = self._loop.call_at(self._last + FLUSH_EVERY_S, self._flush_later)
        # Reads of data already buffered and completed flushes do not yield: without this, a
        # stream faster than the gateway would hold the loop (and every Jupyter request) until
        # the engine paused.
        await asyncio.sleep(0)

    def _flush_later(self) -> None:
        self._timer = None
        self._last = self._loop.time()
        if not self._handler._finished:
            sent = self._handler.flush()  # bytes that arrived after the last batch
            sent.add_done_callback(lambda f: f.cancelled() or f.exception())  # a client gone: nothing to say

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@web.stream_request_body
class EndpointHandler(web.RequestHandler):
    """Proxies one request to a deployment's engine."""

    SUPPORTED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")  # type: ignore[assignment]

    def initialize(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._upstream: UpstreamResponse | None = None
        self._client_gone = False
        self._admission = Admission()
        self._claim: Claim | None = None  # its concurrency slot and quota place, from admission until recorded
        self._body = bytearray()
        self._started = time.perf_counter()
        self._pending: Refusal | None = None  # a refusal answered once the request's body is read
        self._discard = False  # the body of a refused request is read and dropped (the connection stays)
        self._forwarding = False
        self._observed = False
        self._capture: Capture | None = None  # the bodies, where the deployment captures them
        self._stream_asked = False  # the body asks for a streamed answer (`"stream": true`)

    # tornado hooks ------------------------------------------------------------------------

    def check_xsrf_cookie(self) -> None:
        """Endpoints are called by API clients with a key, not by browsers with cookies."""

    def clear(self) -> None:
        """tornado's reset of the answer, less its per-request date formatting and `Server` header.

        Called for every request (and again before an error); `RequestHandler.clear` formats the
        Date anew each time and sets a `Server` header the gateway removes anyway.
        """
        self._headers = httputil.HTTPHeaders({"Content-Type": "text/html; charset=UTF-8", "Date": http_date()})
        self._write_buffer = []
        self._status_code = 200
        self._reason = httputil.responses[200]

    def compute_etag(self) -> None:
        """No ETag: the engine's answer passes through as it is (tornado would hash every body)."""
        return None

    def _log(self) -> None:
        """Skip Jupyter's per-request log and HTTP metrics: the gateway records its own (MetricsHub);
        on the hot path they cost as much as the proxying itself. Server errors are still logged."""
        if self.get_status() >= 500:
            log.warning("%d %s %s", self.get_status(), self.request.method, self._admission.engine_path)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Any error tornado raises itself (a bad request line...) as an error in the route's dialect."""
        self.set_header("Content-Type", "application/json")
        kind = "invalid_request_error" if status_code < 500 else "server_error"
        self.finish(json.dumps(refusal_document(Refusal(status_code, self._reason, kind), self._admission.dialect)))

    def write(self, chunk: str | bytes | dict[str, Any]) -> None:
        """Every byte of the answer passes here: kept for the request log where the deployment captures bodies."""
        if self._capture is not None and isinstance(chunk, (bytes, str)):
            self._capture.keep(chunk.encode() if isinstance(chunk, str) else chunk)
        super().write(chunk)

    def on_connection_close(self) -> None:
        self._client_gone = True
        if not self._forwarding:
            self._release(0)  # gone before its body was read: nothing else will give its places back
        if self._upstream is not None:
            # Closing the upstream connection tells the engine the client left: it stops work.
            self._upstream.close()

    # Before the body: everything the request line and headers decide ----------------------

    async def prepare(self) -> None:
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
        headers = self.request.headers
        return "Transfer-Encoding" in headers or headers.get("Content-Length", "0") not in ("", "0")

    def _drainable(self) -> bool:
        """A refused request's body is small enough to read and drop (and nobody waits for `100 Continue`)."""
        headers = self.request.headers
        length = headers.get("Content-Length", "")
        return ("Transfer-Encoding" not in headers and "Expect" not in headers and length.isdigit()
                and int(length) <= DRAIN_LIMIT)

    def data_received(self, chunk: bytes) -> None:
        if self._finished or self._discard:
            return
        limit = self._admission.body_limit
        if len(self._body) + len(chunk) > limit:
            self._refuse(Refusal(413, f"request body exceeds the limit of {limit} bytes", "invalid_request_error",
                                 close=True))
            return
        self._body += chunk

    async def _admit(self) -> Refusal | None:
        """The one admission (`admission`): decided from the head, a sleeping engine woken for a valid key,
        then the request's places claimed in the step that checks them."""
        gateway = self.gateway
        request = self.request
        head = RequestHead(request.method or "GET", request.path, request.query, request.headers)
        now = time.time()
        found = self._admission = admission.admit(head, gateway, now)
        if found.wake and gateway.config.wake is not None and found.dep is not None:
            # A sleeping engine, or one parked to free memory, comes back for a caller with a valid key.
            await gateway.config.wake(found.dep)
            now = time.time()
            found = self._admission = admission.admit(head, gateway, now)
        if found.key is not None:
            gateway.tokens.touch(found.key, now)
        if found.refusal is not None:
            return found.refusal
        claim = admission.take(found, started=gateway.supervisor.request_started,
                               finished=gateway.supervisor.request_finished, quotas=gateway.quotas, now=now)
        if isinstance(claim, Refusal):
            return claim
        self._claim = claim
        return None

    def _start_capture(self, dep: Deployment) -> None:
        limit = dep.config.capture_max_bytes
        authorization = self.request.headers.get("Authorization")
        secrets = tuple(s for s in (self._admission.presented, dep.engine_key, authorization) if s)
        self._capture = Capture(limit, bytes(self._body[: limit + CAPTURE_SLACK]), secrets=secrets)

    def _release(self, tokens: int) -> None:
        """Give the request's concurrency slot and quota place back (once; `tokens` count in its key's quotas)."""
        if self._claim is not None:
            self._claim.release(tokens, time.time())

    def _observe(self, record: RequestRecord) -> None:
        """A finished request: its places given back, then the record to every observer, once
        (an error answered while forwarding is not counted again when the forwarding ends)."""
        self._release(record.usage.total if record.usage else 0)
        record.method, record.path, record.capture = self.request.method or "", self._admission.engine_path, self._capture
        if not self._observed:
            self._observed = True
            self.gateway.observe(record)

    def _refuse(self, refusal: Refusal) -> None:
        found = self._admission
        self.set_status(refusal.status)
        for name, value in {**found.cors, **refusal.headers}.items():
            self.set_header(name, value)
        if refusal.close:
            self.set_header("Connection", "close")
        if refusal.status == 204:
            self.finish()
        else:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(refusal_document(refusal, found.dialect)))
        dep = found.dep
        if dep is not None and refusal.kind:
            self._observe(RequestRecord(dep.id, found.model_label(), refusal.status,
                                        time.perf_counter() - self._started, key_id=found.key_id))

    # After the body ----------------------------------------------------------------------

    async def get(self, *args: str, **kwargs: str) -> None:
        try:
            await self._answer()
        finally:
            self._release(0)  # whatever happened, its places go back (a no-op once recorded)

    async def _answer(self) -> None:
        if self._pending is not None:
            self._refuse(self._pending)
        found = self._admission
        dep = found.dep
        if self._finished or dep is None:
            return
        if dep.config.capture_bodies:
            self._start_capture(dep)
        admitted = admission.admit_body(found, bytes(self._body), self.request.headers.get("Content-Type", ""),
                                        self.request.method or "GET")
        self._stream_asked = admitted.stream
        if admitted.refusal is not None:
            self._refuse(admitted.refusal)
            return
        relay = self.gateway.relay if self._capture is None and self._detachable() else None
        if relay is not None and not (self._stream_asked and relay.available()):
            relay = None
        self._forwarding = True
        relayed = Relayed(502)
        try:
            if relay is not None:
                relayed = await self._forward_elsewhere(relay, dep, admitted.body, admitted.injected)
            else:
                relayed = await self._forward(dep, admitted.body, admitted.injected)
        finally:
            try:
                self._observe(
                    RequestRecord(
                        deployment_id=dep.id, model=found.model_label(), status=relayed.status,
                        latency_s=time.perf_counter() - self._started, first_chunk_s=relayed.first_chunk_s,
                        usage=relayed.usage, streamed=relayed.streamed, key_id=found.key_id,
                    )
                )
            finally:
                if relayed.after_record is not None:
                    await relayed.after_record()

    post = put = patch = delete = options = head = get  # type: ignore[assignment]

    async def _send(self, dep: Deployment, body: bytes) -> tuple[UpstreamResponse | None, Replica | None]:
        """Send the request to the serving replica with the fewest in flight; one that cannot be connected to
        leaves the rotation and the next takes the request (it never reached the first). Refused: (None, None)."""
        gateway = self.gateway
        headers = request_headers(self.request.headers.get_all())
        target = self._target()
        tried: set[str] = set()
        while True:
            replica = pick(dep.replicas, tried)
            if replica is None or replica.address is None:
                self._refuse(Refusal(503, f"no replica of deployment {dep.name!r} is serving", "unavailable_error",
                                     headers={"Retry-After": "5"}))
                return None, None
            tried.add(replica.id)
            replica.in_flight += 1
            replica.requests += 1
            try:
                upstream = await gateway.upstream.request(
                    replica.address, self.request.method or "GET", target,
                    [*headers, ("Authorization", f"Bearer {replica.engine_key}")], body,
                    timeout=gateway.config.upstream_timeout_s,
                )
            except UpstreamUnreachable as exc:
                replica.in_flight -= 1
                gateway.supervisor.replica_unreachable(dep, replica, str(exc))
                if len(dep.replicas) > 1:
                    continue
                self._refuse(Refusal(502, f"the engine could not be reached: {exc}", "upstream_error"))
                return None, None
            except UpstreamTimeout as exc:
                replica.in_flight -= 1
                self._refuse(Refusal(504, f"the engine did not answer: {exc}", "timeout_error"))
                return None, None
            except UpstreamError as exc:
                replica.in_flight -= 1
                self._refuse(Refusal(502, f"the engine could not be reached: {exc}", "upstream_error"))
                return None, None
            return upstream, replica

    async def _forward(self, dep: Deployment, body: bytes, injected: bool) -> Relayed:
        started = time.perf_counter()
        upstream, replica = await self._send(dep, body)
        if upstream is None or replica is None:
            return Relayed(self.get_status())
        try:
            status, tap, first_chunk = await self._relay(upstream, injected, started)
        finally:
            replica.in_flight -= 1
        return Relayed(status, tap.finish() if tap else None, bool(tap and tap.is_sse), first_chunk)

    # Streams through the relay worker ------------------------------------------------------

    def _detachable(self) -> bool:
        """Whether this connection can be handed to the relay worker and taken back: plain HTTP/1.1
        (no TLS), nothing of a next request read yet, nothing of ours still being written."""
        connection = self.request.connection
        stream = getattr(connection, "stream", None)
        return (
            self.request.version == "HTTP/1.1" and type(stream) is iostream.IOStream and not self._client_gone
            and not stream.writing() and not getattr(stream, "_read_buffer_size", 1)
            and self.gateway.config.http_server is not None
        )

    def _keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.request.headers.get("Connection", "").split(",")}
        return "close" not in tokens

    def _target(self) -> str:
        found = self._admission
        return f"{found.engine_path}?{found.query}" if found.query else found.engine_path

    async def _forward_elsewhere(self, relay: StreamRelay, dep: Deployment, body: bytes, injected: bool) -> Relayed:
        """The request goes to the engine, and its answer to the client, from the relay worker; this
        server takes the connection back for the client's next request."""
        gateway = self.gateway
        address = self.request.connection.context.address  # type: ignore[attr-defined]
        keep_alive = self._keep_alive()
        headers = request_headers(self.request.headers.get_all())
        target = self._target()
        stream = lift(self.detach())  # tornado no longer reads or writes this connection
        tried: set[str] = set()
        while True:
            replica = pick(dep.replicas, tried)
            if replica is None or replica.address is None:
                return await self._answer_detached(stream, address, keep_alive, Refusal(
                    503, f"no replica of deployment {dep.name!r} is serving", "unavailable_error",
                    headers={"Retry-After": "5"}))
            tried.add(replica.id)
            replica.in_flight += 1
            replica.requests += 1
            job = Job(
                id=relay.new_id(), method=self.request.method or "POST", target=target, address=replica.address,
                headers=(*headers, ("Authorization", f"Bearer {replica.engine_key}")),
                timeout_s=gateway.config.upstream_timeout_s, keep_alive=keep_alive, injected=injected,
                cors=tuple(self._admission.cors.items()),
            )
            try:
                outcome = await relay.relay(stream.fileno(), job, body)
            finally:
                replica.in_flight -= 1
            if isinstance(outcome, Outcome) and (refusal := relay_refusal(outcome)) is not None:
                if outcome.outcome == "unreachable":
                    gateway.supervisor.replica_unreachable(dep, replica, outcome.message)
                    if len(dep.replicas) > 1:
                        continue
                return await self._answer_detached(stream, address, keep_alive, refusal)
            usage = Usage(*outcome.usage) if outcome.usage else None
            relayed = Relayed(outcome.status or 502, usage, outcome.streamed, outcome.first_chunk_s)
            if isinstance(outcome, Ended):  # its end is written once the request is recorded
                relayed.after_record = functools.partial(self._end_elsewhere, relay, outcome.id, stream, address)
            else:
                self._after_relay(outcome, stream, address)
            return relayed

    async def _end_elsewhere(self, relay: StreamRelay, job_id: int, stream: socket.socket, address: Any) -> None:
        """The request is recorded: the worker writes the answer's end; then the connection comes back."""
        self._after_relay(await relay.finish(job_id), stream, address)

    def _after_relay(self, final: Outcome, stream: socket.socket, address: Any) -> None:
        """The worker is done with the request: the connection is served here again, or closed."""
        self._take_back(stream, address, final.outcome == "done" and final.reusable)

    async def _answer_detached(self, stream: socket.socket, address: Any, keep_alive: bool,
                               refusal: Refusal) -> Relayed:
        """The gateway's own error, written on a connection that is out of tornado's hands."""
        await answer_and_take_back(self.gateway.config.http_server, stream, address,
                                   refusal_answer(refusal, self._admission.cors, keep_alive=keep_alive,
                                                  dialect=self._admission.dialect), keep_alive)
        return Relayed(refusal.status)

    def _take_back(self, stream: socket.socket, address: Any, reusable: bool) -> None:
        """Serve the connection's next request (an answer that ended cleanly, keep-alive), or close it."""
        take_back(self.gateway.config.http_server, stream, address, reusable)

    async def _relay(self, upstream: UpstreamResponse, injected: bool, started: float) -> tuple[int, UsageTap | None,
                                                                                                 float | None]:
        """Pass the engine's answer on, head then body chunk by chunk, reading usage on the way."""
        self._upstream = upstream
        if self._client_gone:
            upstream.close()
            return upstream.status, None, None
        first_chunk: float | None = None
        tap = UsageTap(upstream.headers.get("Content-Type", ""), drop_injected_usage=injected,
                       read_json=self.request.method not in ("GET", "HEAD"))
        streaming = tap.is_sse or "Content-Length" not in upstream.headers
        try:
            self.set_status(upstream.status, upstream.reason or httputil.responses.get(upstream.status, "Unknown"))
            seen: set[str] = set()
            for raw_name, raw_value in upstream.raw_headers:
                name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
                if not returned_header(name):
                    continue
                lower = name.lower()
                if lower in seen:
                    self.add_header(name, value)
                else:
                    self.set_header(name, value)  # replaces tornado's defaults (Content-Type)
                    seen.add(lower)
            for name, value in self._admission.cors.items():
                self.set_header(name, value)
            if tap.drop_injected_usage:
                self.clear_header("Content-Length")
            flusher = StreamFlusher(self) if streaming else None
            # A body of known length and the last chunk go out in finish(), in the turn that counts
            # the request (`get`); a stream's `[DONE]` would go before: it waits for finish() too.
            end = AnswerEnd(sse=tap.is_sse, body_length=None)
            async for chunk in upstream.iter_body():
                if self._client_gone:
                    upstream.close()
                    break
                if first_chunk is None:
                    first_chunk = time.perf_counter() - started
                out = end.pass_on(tap.feed(chunk))
                if out:
                    self.write(out)
                    if flusher is not None:
                        await flusher.wrote()
            if flusher is not None:
                flusher.cancel()
        except (UpstreamError, iostream.StreamClosedError) as exc:
            upstream.close()
            if isinstance(exc, UpstreamTimeout) and not self._headers_written:
                self.clear()
                self._refuse(Refusal(504, "the engine stopped answering", "timeout_error"))
                return 504, tap, first_chunk
            self._abort_client()
            return upstream.status, tap, first_chunk
        except ValueError as exc:  # a header value tornado will not send
            upstream.close()
            self.clear()
            self._refuse(Refusal(502, f"the engine's answer could not be passed on: {exc}", "upstream_error"))
            return 502, tap, first_chunk
        finally:
            self._upstream = None
        if not self._client_gone:
            rest = end.pass_on(tap.close()) + end.release()[1]
            if rest:
                self.write(rest)
            self.finish()
        return upstream.status, tap, first_chunk

    def _abort_client(self) -> None:
        """End the client's connection without a clean end of body: a cut answer must look cut."""
        self._client_gone = True
        stream = getattr(self.request.connection, "stream", None)
        if stream is not None:
            stream.close()
