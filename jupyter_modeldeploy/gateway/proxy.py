"""The gateway: `/modeldeploy/endpoints/<route>/...` to the deployment's engine.

A plain tornado handler (no Jupyter login: callers present a deployment key). It decides
nothing itself: the one admission (`admission`) decides from the request line and headers
before the body is read (`prepare`) and claims the request's concurrency slot and quota place in
the same step; the body is then read up to the limit, admitted (model, limits, model scope), and
the request forwarded on a pooled connection with the engine's private key. The answer streams
back chunk by chunk as it arrives.

The handler runs in the gateway worker, which owns endpoint traffic (`relay.worker`), and on the
Jupyter server's loop, which hands each endpoint connection to the worker after its first request's
head (`prepare`) and serves it itself only while no worker serves. Its `gateway` (`core.GatewayCore`)
is that process's state and counters; the handler does not know which one it has.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from tornado import httputil, iostream, web

from ..supervisor.replicas import Replica, pick
from . import admission
from .admission import DRAIN_LIMIT, Admission, Claim, RequestHead
from .answer_end import AnswerEnd
from .core import GatewayCore
from .headers import request_headers, returned_header
from .records import CAPTURE_SLACK, Capture, RequestRecord
from .refusals import Refusal, refusal_document
from .response_head import http_date
from .upstream import UpstreamError, UpstreamResponse, UpstreamTimeout, UpstreamUnreachable
from .usage import Usage, UsageTap

log = logging.getLogger(__name__)

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

    def initialize(self, gateway: GatewayCore, door: str = "jupyter") -> None:
        self.gateway = gateway
        self.door = door  # how the request came: through the Jupyter server, or the worker's socket or port
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
        self._held = b""  # the answer's last bytes, written once the request is counted
        self._replica: str | None = None  # the replica it was last sent to

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
        if await self.gateway.hand_off(self):
            self._finished = True  # the connection is the worker's now: nothing more happens here
            return
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
        gateway.settle()  # every change published before this request was sent is in force
        now = time.time()
        found = self._admission = admission.admit(head, gateway, now)
        if found.wake and found.dep is not None:
            # A sleeping engine, or one parked to free memory, comes back for a caller with a valid key.
            await gateway.wake(found.dep)
            gateway.settle()
            now = time.time()
            found = self._admission = admission.admit(head, gateway, now)
        if found.key is not None:
            gateway.touch(found.key, now)
        if found.refusal is not None:
            return found.refusal
        claim = admission.take(found, started=gateway.request_started,
                               finished=gateway.request_finished, quotas=gateway.quotas, now=now)
        if isinstance(claim, Refusal):
            return claim
        self._claim = claim
        return None

    def _start_capture(self, dep: Any) -> None:
        limit = dep.config.capture_max_bytes
        authorization = self.request.headers.get("Authorization")
        secrets = tuple(s for s in (self._admission.presented, dep.engine_key, authorization) if s)
        self._capture = Capture(limit, bytes(self._body[: limit + CAPTURE_SLACK]), secrets=secrets)

    def _release(self, tokens: int) -> None:
        """Give the request's concurrency slot and quota place back (once; `tokens` count in its key's quotas)."""
        if self._claim is not None:
            self._claim.release(tokens, time.time())

    def _observe(self, record: RequestRecord) -> None:
        """A finished request: its places given back, then its record, once (an error answered while
        forwarding is not counted again when the forwarding ends). Called before the answer's end is
        written: by the time its client can tell the answer ended, the request is counted."""
        self._release(record.usage.total if record.usage else 0)
        record.method, record.path, record.capture = self.request.method or "", self._admission.engine_path, self._capture
        record.door, record.replica = self.door, self._replica
        if not self._observed:
            self._observed = True
            self.gateway.observe(record, claimed=self._claim is not None)

    def _refuse(self, refusal: Refusal) -> None:
        found = self._admission
        self.set_status(refusal.status)
        for name, value in {**found.cors, **refusal.headers}.items():
            self.set_header(name, value)
        if refusal.close:
            self.set_header("Connection", "close")
        body = b""
        if refusal.status != 204:
            self.set_header("Content-Type", "application/json")
            body = json.dumps(refusal_document(refusal, found.dialect)).encode()
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
            web.RequestHandler.write(self, rest)
        self.finish()

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
        self._forwarding = True
        relayed = Relayed(502)
        try:
            relayed = await self._forward(dep, admitted.body, admitted.injected)
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
        if not self._finished and not self._client_gone:
            self._end(self._held)

    post = put = patch = delete = options = head = get  # type: ignore[assignment]

    async def _send(self, dep: Any, body: bytes) -> tuple[UpstreamResponse | None, Replica | None]:
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
            self._replica = replica.id
            try:
                upstream = await gateway.upstream.request(
                    replica.address, self.request.method or "GET", target,
                    [*headers, ("Authorization", f"Bearer {replica.engine_key}")], body,
                    timeout=gateway.config.upstream_timeout_s,
                )
            except UpstreamUnreachable as exc:
                replica.in_flight -= 1
                gateway.replica_unreachable(dep, replica, str(exc))
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

    async def _forward(self, dep: Any, body: bytes, injected: bool) -> Relayed:
        started = time.perf_counter()
        upstream, replica = await self._send(dep, body)
        if upstream is None or replica is None:
            return Relayed(self.get_status())
        try:
            status, tap, first_chunk = await self._relay(upstream, injected, started)
        finally:
            replica.in_flight -= 1
        return Relayed(status, tap.finish() if tap else None, bool(tap and tap.is_sse), first_chunk)

    def _target(self) -> str:
        found = self._admission
        return f"{found.engine_path}?{found.query}" if found.query else found.engine_path

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
            self._held = end.pass_on(tap.close()) + end.release()[1]  # written once the request is counted
        return upstream.status, tap, first_chunk

    def _abort_client(self) -> None:
        """End the client's connection without a clean end of body: a cut answer must look cut."""
        self._client_gone = True
        stream = getattr(self.request.connection, "stream", None)
        if stream is not None:
            stream.close()
