"""The gateway: `/modeldeploy/endpoints/<route>/...` to the deployment's engine.

A plain tornado handler (no Jupyter login: callers present a deployment key). Everything
that can be decided from the request line and headers is decided before the body is read
(`prepare`): the path in its one normal form, the key, the deployment's state, the engine's
allow-list of serving routes, the payload limit and the concurrency limit. The body is then
read up to the limit, the model chosen, and the request forwarded on a pooled connection
with the engine's private key; the answer streams back chunk by chunk as it arrives.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tornado import httputil, iostream, web
from tornado.httpserver import HTTPServer

from ..supervisor import Deployment, Status, Supervisor
from ..supervisor.keys import hash_key
from ..supervisor.replicas import Replica, pick
from ..supervisor.tokens import Quotas, TokenInfo, TokenRegistry
from .answer_end import AnswerEnd
from .auth import AuthDecision, authorize, model_refusal, presented_key, role_refusal
from .body import prepare_body
from .detached import answer_and_take_back, lift, take_back
from .headers import cors_headers, origin_allowed, preflight_headers, request_headers, returned_header
from .lease import Lease
from .lease_grants import LeaseGrants
from .paths import PathError, check_query, normalise_path
from .quotas import QuotaBook
from .records import CAPTURE_SLACK, FIXED_KEY_ID, NO_KEY_ID, Capture, RequestRecord, model_label
from .refusals import Refusal, error_body, refusal_answer, relay_refusal
from .relay_pool import StreamRelay, address_document
from .response_head import http_date
from .upstream import UpstreamClient, UpstreamError, UpstreamResponse, UpstreamTimeout, UpstreamUnreachable
from .usage import Usage, UsageTap

log = logging.getLogger(__name__)

DEFAULT_PAYLOAD_LIMIT = 16 << 20
FLUSH_EVERY_S = 0.005  # streamed bytes reach the client within 5 ms, in batches (see StreamFlusher)
ENDPOINTS_MARKER = "/modeldeploy/endpoints/"
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
    stream_relay: bool = False  # streamed answers pass through the relay worker process (relay_worker)
    # The relay worker also serves the next plain requests of a connection it was handed (lease).
    leases: bool = True
    # The tornado server that serves a connection again once the relay worker answered on it.
    http_server: Callable[[], HTTPServer] | None = None


class Gateway:
    """Shared state of every endpoint handler: the supervisor, tokens and the upstream client."""

    def __init__(self, supervisor: Supervisor, tokens: TokenRegistry, config: GatewayConfig | None = None):
        self.supervisor = supervisor
        self.tokens = tokens
        self.config = config or GatewayConfig()
        self.quotas = QuotaBook()
        self.upstream = UpstreamClient(connect_timeout=self.config.connect_timeout_s)
        self.relay = StreamRelay() if self.config.stream_relay and StreamRelay.supported() else None
        self.leases = LeaseGrants(self, self.relay) if self.relay is not None and self.config.leases else None
        if self.leases is not None:
            self._follow_changes(self.leases)

    def _follow_changes(self, leases: LeaseGrants) -> None:
        """Any change of a deployment's state or of a key ends the leases made before it."""
        chained = self.supervisor.on_change

        def deployment_changed(dep: Deployment) -> None:
            leases.changed()
            if chained is not None:
                chained(dep)

        self.supervisor.on_change = deployment_changed
        self.tokens.on_change = leases.changed

    def settled(self) -> None:
        """Count every request answered so far, the relay worker's included."""
        if self.leases is not None:
            self.leases.settled()

    def observe(self, record: RequestRecord) -> None:
        """Hand a finished request to every observer."""
        for observer in self.config.observers:
            observer(record)

    def key_belongs_elsewhere(self, key: str, dep: Deployment) -> bool:
        """Whether a key is the fixed key of another deployment (so the answer is 403, not 401)."""
        digest = hash_key(key)
        return any(d.api_key_hash == digest for d in self.supervisor.deployments.values() if d.id != dep.id)

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
        self._dep: Deployment | None = None
        self._engine_path = "/"
        self._query = ""
        self._model: str | None = None
        self._body = bytearray()
        self._body_limit = DEFAULT_PAYLOAD_LIMIT
        self._started = time.perf_counter()
        self._cors: dict[str, str] = {}
        self._pending: Refusal | None = None
        self._key: TokenInfo | None = None  # the generated key the caller presented, once it is accepted
        self._key_id = NO_KEY_ID
        self._quota_held = False  # counted in its key's quotas, until `_observe` or a lost connection releases it
        self._quota_book = ""  # the QuotaBook entry it is counted in
        self._forwarding = False
        self._observed = False
        self._capture: Capture | None = None  # the bodies, where the deployment captures them
        self._stream_asked = False  # the body asks for a streamed answer (`"stream": true`)
        self._prefix = ""  # the raw path of the endpoint, up to and with its route segment
        self._presented: str | None = None  # the key the caller presented

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
            log.warning("%d %s %s", self.get_status(), self.request.method, self._engine_path)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Any error tornado raises itself (a bad request line...) as an OpenAI-style JSON error."""
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(error_body(self._reason, "invalid_request_error" if status_code < 500 else "server_error",
                                          status_code)))

    def write(self, chunk: str | bytes | dict[str, Any]) -> None:
        """Every byte of the answer passes here: kept for the request log where the deployment captures bodies."""
        if self._capture is not None and isinstance(chunk, (bytes, str)):
            self._capture.keep(chunk.encode() if isinstance(chunk, str) else chunk)
        super().write(chunk)

    def on_connection_close(self) -> None:
        self._client_gone = True
        if not self._forwarding:
            self._release_quota(0)  # gone before its body was read: nothing else will release it
        if self._upstream is not None:
            # Closing the upstream connection tells the engine the client left: it stops work.
            self._upstream.close()

    # Before the body: everything the request line and headers decide ----------------------

    async def prepare(self) -> None:
        refusal = await self._admit()
        if refusal is None:
            return
        if self._has_body():
            self._refuse(refusal)  # before the body: tornado then closes the connection unread
        else:
            self._pending = refusal  # answered once the (empty) request is complete: keep-alive holds

    def _has_body(self) -> bool:
        headers = self.request.headers
        return "Transfer-Encoding" in headers or headers.get("Content-Length", "0") not in ("", "0")

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        if len(self._body) + len(chunk) > self._body_limit:
            self._refuse(Refusal(413, f"request body exceeds the limit of {self._body_limit} bytes", "invalid_request_error"))
            return
        self._body += chunk

    async def _admit(self) -> Refusal | None:
        raw = self.request.path
        at = raw.find(ENDPOINTS_MARKER)
        route, _, rest = raw[at + len(ENDPOINTS_MARKER):].partition("/") if at >= 0 else ("", "", "")
        self._prefix = raw[:at + len(ENDPOINTS_MARKER) + len(route)]
        dep = self.gateway.supervisor.by_route(route) if route else None
        if dep is None:
            return Refusal(404, "no deployment at this route", "not_found_error")
        self._dep = dep
        try:
            path = normalise_path("/" + rest)
            self._query = check_query(self.request.query)
        except PathError as exc:
            return Refusal(400, str(exc), "invalid_request_error")
        self._engine_path = path
        origin = self.request.headers.get("Origin")
        allowed_origins = dep.config.cors_allow_origins
        self._cors = cors_headers(origin, allowed_origins)
        method = self.request.method or "GET"
        if method == "OPTIONS" and origin and "Access-Control-Request-Method" in self.request.headers:
            return self._preflight(origin, allowed_origins)
        if path == "/health" and method in ("GET", "HEAD"):
            return self._health(dep)
        refusal = self._authorize(dep)
        if refusal is None and self.gateway.config.wake is not None:
            # A sleeping engine, or one stopped for idleness, comes back for a caller with a valid key.
            await self.gateway.config.wake(dep)
        if refusal is not None:
            return refusal
        return (self._admit_to_engine(dep, method, path) or self._admit_concurrency(dep)
                or self._denied(role_refusal(self._key, method)) or self._admit_quota(dep))

    def _preflight(self, origin: str, allowed: list[str]) -> Refusal:
        if not origin_allowed(origin, allowed):
            return Refusal(403, f"origin {origin[:200]!r} may not call this endpoint", "permission_error")
        headers = preflight_headers(origin, allowed, self.request.headers.get("Access-Control-Request-Headers"))
        return Refusal(204, "", "", headers=headers)

    def _health(self, dep: Deployment) -> Refusal:
        serving = dep.status.serving
        state = dep.status.value
        return Refusal(200 if serving else 503, "", "", extra={"status": "ok" if serving else "unavailable",
                                                               "state": state})

    def _authorize(self, dep: Deployment) -> Refusal | None:
        """Check the presented key; None when the caller may use this deployment."""
        gateway = self.gateway
        key = presented_key(self.request.headers.get("Authorization"), self.request.headers.get("x-api-key"))
        self._presented = key
        token = gateway.tokens.lookup(key) if key else None
        decision = authorize(
            key, deployment_id=dep.id, project=dep.config.project, public=dep.config.public,
            api_key_hash=dep.api_key_hash, token=token, now=time.time(),
        )
        if decision.allowed:
            if token is not None and decision.token_id is not None:
                self._key, self._key_id = token, token.id
                gateway.tokens.touch(token, time.time())
            elif key is not None and not dep.config.public:
                self._key_id = FIXED_KEY_ID
            return None
        if decision.status == 401 and key and gateway.key_belongs_elsewhere(key, dep):
            return Refusal(403, "this key is not valid for this deployment", "permission_error")
        if decision.status == 401:
            return Refusal(401, decision.message, "authentication_error",
                           headers={"WWW-Authenticate": 'Bearer realm="modeldeploy"'})
        return Refusal(decision.status, decision.message, "permission_error")

    def _admit_quota(self, dep: Deployment) -> Refusal | None:
        """The key's quotas (429 with Retry-After past one); an admitted request holds its place until released.
        A generated key carries its quotas; the fixed key has the deployment's `api_key_quotas`."""
        key = self._key
        if key is not None and key.quotas is not None:
            book, quotas = key.id, key.quotas
        elif self._key_id == FIXED_KEY_ID and (fixed := dep.config.api_key_quotas.limits()):
            book, quotas = f"{FIXED_KEY_ID}:{dep.id}", Quotas(**fixed)
        else:
            return None
        exceeded = self.gateway.quotas.admit(book, quotas, time.time())
        if exceeded is None:
            self._quota_book = book
            self._quota_held = True
            return None
        return Refusal(429, exceeded.message(), "rate_limit_error", extra={"param": exceeded.quota},
                       headers={"Retry-After": str(exceeded.retry_after_s)}, code="rate_limit_exceeded")

    def _start_capture(self, dep: Deployment) -> None:
        limit = dep.config.capture_max_bytes
        key = presented_key(self.request.headers.get("Authorization"), self.request.headers.get("x-api-key"))
        secrets = tuple(s for s in (key, dep.engine_key, self.request.headers.get("Authorization")) if s)
        self._capture = Capture(limit, bytes(self._body[: limit + CAPTURE_SLACK]), secrets=secrets)

    def _release_quota(self, tokens: int) -> None:
        if self._quota_held:
            self._quota_held = False
            self.gateway.quotas.release(self._quota_book, tokens, time.time())

    def _observe(self, record: RequestRecord) -> None:
        """A finished request: its key's quota place released, then the record to every observer, once
        (an error answered while forwarding is not counted again when the forwarding ends)."""
        self._release_quota(record.usage.total if record.usage else 0)
        record.method, record.path, record.capture = self.request.method or "", self._engine_path, self._capture
        if not self._observed:
            self._observed = True
            self.gateway.observe(record)

    @staticmethod
    def _denied(decision: AuthDecision | None) -> Refusal | None:
        """A scope's refusal (403) as the gateway answers it."""
        return None if decision is None else Refusal(decision.status, decision.message, "permission_error")

    def _admit_to_engine(self, dep: Deployment, method: str, path: str) -> Refusal | None:
        """State, allow-list, payload and concurrency checks; sets what `_forward` needs."""
        if dep.status is Status.LOADING:
            return Refusal(503, f"deployment {dep.name!r} is still loading", "unavailable_error",
                           headers={"Retry-After": "5"})
        if dep.status is Status.UNHEALTHY:
            return Refusal(503, f"deployment {dep.name!r} is not answering its health checks", "unavailable_error",
                           headers={"Retry-After": "5"})
        if dep.status is Status.STOPPING:
            return Refusal(503, f"deployment {dep.name!r} is stopping", "unavailable_error")
        if not dep.status.answering or dep.plan is None or pick(dep.replicas) is None:
            return Refusal(503, f"deployment {dep.name!r} is {dep.status.value}; relaunch it", "unavailable_error")
        plan = dep.plan
        segments = path.split("/", 2)
        route = plan.routes.find(path)
        if segments[1] in dep.models and len(segments) > 2 and segments[1] not in ("v1", "health"):
            # <endpoint>/<model>/...: that model's own route, or a shared route with the model chosen.
            self._model = segments[1]
            inner = "/" + segments[2]
            route = plan.routes.find(inner)
            if route is not None and not (route.model_scoped or plan.model_routes):
                path = inner
        if route is None:
            return Refusal(404, f"{path} is not part of this deployment's serving API", "not_found_error")
        if method not in route.methods:
            return Refusal(405, f"{path} does not take {method}", "invalid_request_error",
                           headers={"Allow": ", ".join(sorted(route.methods))})
        self._engine_path = path
        limit = plan.limits_for(self._model).payload_limit_bytes if self._model else plan.largest_payload_limit()
        self._body_limit = int(limit or self.gateway.config.default_payload_limit)
        length = self.request.headers.get("Content-Length")
        if length is not None:
            if not length.isdigit():
                return Refusal(400, "Content-Length must be a number of bytes", "invalid_request_error")
            if int(length) > self._body_limit:
                return Refusal(413, f"request body of {length} bytes exceeds the limit of {self._body_limit} bytes",
                               "invalid_request_error")
        return None

    def _admit_concurrency(self, dep: Deployment) -> Refusal | None:
        """The deployment's concurrency limit (429 past it). Before refusing, the ends of requests the
        relay worker served under leases that are in the channel unread are counted."""
        assert dep.plan is not None
        limit = dep.plan.max_concurrent_requests
        if limit is None or dep.in_flight < limit:
            return None
        leases = self.gateway.leases
        if leases is not None and leases.in_flight(dep.id):
            leases.settled()
            if dep.in_flight < limit:
                return None
        return Refusal(429, f"too many requests in flight (max_concurrent_requests={limit})", "rate_limit_error")

    def _refuse(self, refusal: Refusal) -> None:
        self.set_status(refusal.status)
        for name, value in {**self._cors, **refusal.headers}.items():
            self.set_header(name, value)
        if refusal.status == 204:
            self.finish()
        elif not refusal.kind:  # the gateway's own answers (health)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(refusal.extra))
        else:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(error_body(refusal.message, refusal.kind, refusal.code or refusal.status,
                                              **refusal.extra)))
        dep = self._dep
        if dep is not None and refusal.kind:
            self._observe(RequestRecord(dep.id, model_label(dep.models, self._model), refusal.status,
                                        time.perf_counter() - self._started, key_id=self._key_id))

    # After the body ----------------------------------------------------------------------

    async def get(self, *args: str, **kwargs: str) -> None:
        if self._pending is not None:
            self._refuse(self._pending)
        if self._finished or self._dep is None:
            return
        dep = self._dep
        if dep.config.capture_bodies:
            self._start_capture(dep)
        body, injected, refusal = self._prepare_body(dep, bytes(self._body))
        if refusal is None and (self._model is not None or self.request.method not in ("GET", "HEAD")):
            chosen = self._model if self._model is not None else model_label(dep.models, None)
            refusal = self._denied(model_refusal(self._key, chosen))
        if refusal is not None:
            self._refuse(refusal)
            return
        relay = self.gateway.relay if self._capture is None and self._detachable() else None
        lease = None
        if relay is not None and relay.available() and self.gateway.leases is not None:
            lease = self.gateway.leases.grant(
                dep, token=self._key, key_id=self._key_id, presented=self._presented,
                origin=self.request.headers.get("Origin"), cors=self._cors, prefix=self._prefix,
            )
        if relay is not None and not ((self._stream_asked or lease is not None) and relay.available()):
            relay = None
        self.gateway.supervisor.request_started(dep)
        self._forwarding = True
        relayed = Relayed(502)
        try:
            if relay is not None:
                relayed = await self._forward_elsewhere(relay, dep, body, injected, lease)
            else:
                relayed = await self._forward(dep, body, injected)
        finally:
            self.gateway.supervisor.request_finished(dep)
            try:
                self._observe(
                    RequestRecord(
                        deployment_id=dep.id, model=model_label(dep.models, self._model), status=relayed.status,
                        latency_s=time.perf_counter() - self._started, first_chunk_s=relayed.first_chunk_s,
                        usage=relayed.usage, streamed=relayed.streamed, key_id=self._key_id,
                    )
                )
            finally:
                if relayed.after_record is not None:
                    await relayed.after_record()

    post = put = patch = delete = options = head = get  # type: ignore[assignment]

    def _prepare_body(self, dep: Deployment, body: bytes) -> tuple[bytes, bool, Refusal | None]:
        """Pick the model from the body, apply per-model limits, ask for stream usage if needed."""
        assert dep.plan is not None
        prepared = prepare_body(
            body, self.request.headers.get("Content-Type", ""), engine_path=self._engine_path, model=self._model,
            models=dep.models, limits_for=dep.plan.limits_for, stream_usage=dep.plan.stream_usage,
        )
        self._model, self._stream_asked = prepared.model, prepared.stream
        refused = prepared.refusal
        if refused is not None:
            return body, False, Refusal(refused.status, refused.message, refused.kind, refused.extra or {})
        return prepared.body, prepared.injected, None

    async def _send(self, dep: Deployment, body: bytes) -> tuple[UpstreamResponse | None, Replica | None]:
        """Send the request to the serving replica with the fewest in flight; one that cannot be connected to
        leaves the rotation and the next takes the request (it never reached the first). Refused: (None, None)."""
        gateway = self.gateway
        headers = request_headers(self.request.headers.get_all())
        target = f"{self._engine_path}?{self._query}" if self._query else self._engine_path
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

    async def _forward_elsewhere(self, relay: StreamRelay, dep: Deployment, body: bytes, injected: bool,
                                 lease: Lease | None) -> Relayed:
        """The request goes to the engine, and its answer to the client, from the relay worker; this
        server takes the connection back for the client's next request, or, under a lease, the worker
        keeps it and serves the next requests itself."""
        gateway = self.gateway
        address = self.request.connection.context.address  # type: ignore[attr-defined]
        keep_alive = self._keep_alive()
        headers = request_headers(self.request.headers.get_all())
        target = f"{self._engine_path}?{self._query}" if self._query else self._engine_path
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
            job = {
                "method": self.request.method or "POST", "target": target, "address": address_document(replica.address),
                "headers": [*headers, ("Authorization", f"Bearer {replica.engine_key}")], "injected": injected,
                "cors": self._cors, "timeout_s": gateway.config.upstream_timeout_s, "keep_alive": keep_alive,
            }
            if lease is not None:
                job["lease"] = lease.to_json()
            on_kept = None
            if lease is not None and gateway.leases is not None:
                on_kept = functools.partial(gateway.leases.hold, sock=stream, address=address, dep=dep, cors=self._cors)
            try:
                outcome = await relay.relay(stream.fileno(), job, body, on_kept)
            finally:
                replica.in_flight -= 1
            refusal = relay_refusal(outcome)
            if refusal is not None:
                if outcome.get("outcome") == "unreachable":
                    gateway.supervisor.replica_unreachable(dep, replica, str(outcome.get("message")))
                    if len(dep.replicas) > 1:
                        continue
                return await self._answer_detached(stream, address, keep_alive, refusal)
            usage = outcome.get("usage")
            relayed = Relayed(int(outcome.get("status") or 502), Usage(*usage) if usage else None,
                              bool(outcome.get("streamed")), outcome.get("first_chunk_s"))
            if outcome.get("ended"):  # its end is written once the request is recorded
                relayed.after_record = functools.partial(self._end_elsewhere, relay, int(outcome["id"]), stream,
                                                         address)
            else:
                self._after_relay(outcome, stream, address)
            return relayed

    async def _end_elsewhere(self, relay: StreamRelay, job_id: int, stream: socket.socket, address: Any) -> None:
        """The request is recorded: the worker writes the answer's end; then the connection comes back."""
        self._after_relay(await relay.finish(job_id), stream, address)

    def _after_relay(self, final: dict[str, Any], stream: socket.socket, address: Any) -> None:
        """The worker is done with the request: the connection is held by it (a lease), served here again, or closed."""
        if not final.get("kept"):  # kept: it is held already (`StreamRelay.relay`'s on_kept)
            self._take_back(stream, address, final.get("outcome") == "done" and bool(final.get("reusable")))

    async def _answer_detached(self, stream: socket.socket, address: Any, keep_alive: bool,
                               refusal: Refusal) -> Relayed:
        """The gateway's own error, written on a connection that is out of tornado's hands."""
        await answer_and_take_back(self.gateway.config.http_server, stream, address,
                                   refusal_answer(refusal, self._cors, keep_alive=keep_alive), keep_alive)
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
            for name, value in self._cors.items():
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
