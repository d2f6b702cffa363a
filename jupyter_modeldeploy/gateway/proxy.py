"""The gateway: `/modeldeploy/endpoints/<route>/...` to the deployment's engine on loopback.

A plain tornado handler (no Jupyter login: callers present the deployment's API key). The
request body is checked against the deployment's limits, then forwarded on a pooled
keep-alive connection with the engine's private key; the response streams back chunk by
chunk as it arrives (Server-Sent Events included). Usage and latency are recorded, and the
supervisor is told when each request starts and ends so the idle clock is right.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tornado import httputil, iostream, web

from ..supervisor import Deployment, Status, Supervisor
from ..supervisor.keys import hash_key
from ..supervisor.tokens import TokenRegistry
from .auth import authorize, presented_key
from .records import RequestRecord  # re-exported: metrics and older callers import it from here
from .upstream import UpstreamError, UpstreamPool, UpstreamResponse, UpstreamTimeout
from .usage import UsageTap, wants_usage_injection

log = logging.getLogger(__name__)

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "host", "content-length",
}
STRIPPED_REQUEST = HOP_BY_HOP | {"authorization", "x-api-key", "cookie", "x-xsrftoken"}
STRIPPED_RESPONSE = HOP_BY_HOP - {"content-length"} | {"set-cookie", "server", "date"}
DEFAULT_PAYLOAD_LIMIT = 16 << 20
# Engine control endpoints that must not be reachable with an API key alone (vLLM's dev-mode
# sleep and RPC routes, runtime LoRA loading, llama.cpp's router and props controls). The
# REST API, under Jupyter's own auth, drives the ones the product uses.
ADMIN_PATHS = {
    "/sleep", "/wake_up", "/is_sleeping", "/collective_rpc", "/reset_prefix_cache", "/reset_mm_cache",
    "/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/props", "/models/load", "/models/unload",
    "/scale_elastic_ep", "/pause", "/resume", "/start_profile", "/stop_profile",
}


@dataclass
class Refusal:
    """A request the gateway answers itself with an error."""

    status: int
    message: str
    kind: str
    extra: dict[str, Any] = field(default_factory=dict)
    model: str | None = None


@dataclass
class GatewayConfig:
    """Gateway settings (from the extension's traitlets)."""

    upstream_timeout_s: float = 600.0
    connect_timeout_s: float = 10.0
    default_payload_limit: int = DEFAULT_PAYLOAD_LIMIT
    wake: Callable[[Deployment], Awaitable[None]] | None = None  # wakes a sleeping engine
    observers: list[Callable[[RequestRecord], None]] = field(default_factory=list)


class Gateway:
    """Shared state of every endpoint handler: the supervisor, tokens and an upstream pool."""

    def __init__(self, supervisor: Supervisor, tokens: TokenRegistry, config: GatewayConfig | None = None):
        self.supervisor = supervisor
        self.tokens = tokens
        self.config = config or GatewayConfig()
        self.pool = UpstreamPool(connect_timeout=self.config.connect_timeout_s)

    def observe(self, record: RequestRecord) -> None:
        """Hand a finished request to every observer."""
        for observer in self.config.observers:
            observer(record)

    def key_belongs_elsewhere(self, key: str, dep: Deployment) -> bool:
        """Whether a key is the fixed key of another deployment (so the answer is 403, not 401)."""
        digest = hash_key(key)
        return any(d.api_key_hash == digest for d in self.supervisor.deployments.values() if d.id != dep.id)

    async def close(self) -> None:
        """Close the upstream pool."""
        self.pool.close()


def error_body(message: str, kind: str, code: str | int | None = None, **extra: Any) -> dict[str, Any]:
    """An OpenAI-style error object."""
    return {"error": {"message": message, "type": kind, "code": code, **extra}}


class EndpointHandler(web.RequestHandler):
    """Proxies one request to a deployment's engine."""

    SUPPORTED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")  # type: ignore[assignment]

    def initialize(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._upstream: UpstreamResponse | None = None
        self._client_gone = False

    def check_xsrf_cookie(self) -> None:
        """Endpoints are called by API clients with a key, not by browsers with cookies."""

    def set_default_headers(self) -> None:
        self.clear_header("Server")

    def compute_etag(self) -> None:
        """No ETag: the engine's answer passes through as it is (tornado would hash every body)."""
        return None

    def _log(self) -> None:
        """Skip Jupyter's per-request log and HTTP metrics: the gateway records its own (MetricsHub);
        on the hot path they cost as much as the proxying itself. Server errors are still logged."""
        if self.get_status() >= 500:
            log.warning("%d %s %s", self.get_status(), self.request.method, self.request.path)

    def fail(self, status: int, message: str, kind: str = "invalid_request_error", **extra: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(error_body(message, kind, status, **extra)))

    def on_connection_close(self) -> None:
        self._client_gone = True
        if self._upstream is not None:
            # Closing the upstream connection tells the engine the client left: it stops work.
            self._upstream.close()

    async def get(self, route: str, path: str) -> None:
        await self._proxy(route, path)

    post = put = patch = delete = options = head = get  # type: ignore[assignment]

    async def _proxy(self, route: str, path: str) -> None:
        gateway = self.gateway
        dep = gateway.supervisor.by_route(route)
        if dep is None:
            self.fail(404, f"no deployment at route {route!r}", "not_found_error")
            return
        started = time.perf_counter()
        admitted = self._authorize(dep)
        if admitted is None and gateway.config.wake is not None:
            # A sleeping engine, or one stopped for idleness, comes back for a caller with a valid key.
            await gateway.config.wake(dep)
        if admitted is None:
            admitted = self._admit(dep, path or "/")
        if isinstance(admitted, Refusal):
            if admitted.status == 401:
                self.set_header("WWW-Authenticate", 'Bearer realm="modeldeploy"')
            if admitted.status == 503 and dep.status is Status.LOADING:
                self.set_header("Retry-After", "5")
            self.fail(admitted.status, admitted.message, admitted.kind, **admitted.extra)
            gateway.observe(RequestRecord(dep.id, admitted.model, admitted.status, time.perf_counter() - started))
            return
        model, path, body, injected = admitted
        gateway.supervisor.request_started(dep)
        status = 502
        tap: UsageTap | None = None
        first_chunk: float | None = None
        try:
            status, tap, first_chunk = await self._forward(dep, path, body, injected)
        finally:
            gateway.supervisor.request_finished(dep)
            usage = tap.finish() if tap is not None else None
            gateway.observe(
                RequestRecord(
                    deployment_id=dep.id, model=model, status=status, latency_s=time.perf_counter() - started,
                    first_chunk_s=first_chunk, usage=usage, streamed=bool(tap and tap.is_sse),
                )
            )

    def _authorize(self, dep: Deployment) -> Refusal | None:
        """Check the presented key; None when the caller may use this deployment."""
        gateway = self.gateway
        key = presented_key(self.request.headers.get("Authorization"), self.request.headers.get("x-api-key"))
        token = gateway.tokens.lookup(key) if key else None
        decision = authorize(
            key, deployment_id=dep.id, project=dep.config.project, public=dep.config.public,
            api_key_hash=dep.api_key_hash, token=token, now=time.time(),
        )
        if not decision.allowed:
            if decision.status == 401 and key and gateway.key_belongs_elsewhere(key, dep):
                return Refusal(403, "this key is not valid for this deployment", "permission_error")
            kind = "authentication_error" if decision.status == 401 else "permission_error"
            return Refusal(decision.status, decision.message, kind)
        return None

    def _admit(self, dep: Deployment, path: str) -> Refusal | tuple[str | None, str, bytes, bool]:
        """Check state, path and limits; returns the refusal or (model, path, body, injected)."""
        if dep.status is Status.LOADING:
            return Refusal(503, f"deployment {dep.name!r} is still loading", "unavailable_error")
        if not dep.status.live or dep.upstream is None:
            return Refusal(503, f"deployment {dep.name!r} is {dep.status.value}; relaunch it", "unavailable_error")
        engine_path = "/" + path.lstrip("/").split("/", 1)[-1] if path.lstrip("/").split("/", 1)[0] in dep.models else path
        if engine_path.rstrip("/") in ADMIN_PATHS:
            return Refusal(404, f"{engine_path} is not served through the gateway; use the REST API", "not_found_error")
        body = self.request.body or b""
        model, path, body, injected, problem = self._route_model(dep, path, body)
        if problem is not None:
            status, message, extra = problem
            kind = "invalid_request_error" if status != 404 else "not_found_error"
            return Refusal(status, message, kind, extra, model)
        limit = getattr(dep.config, "max_concurrent_requests", None)
        if limit is not None and dep.in_flight >= limit:
            return Refusal(429, f"too many requests in flight (max_concurrent_requests={limit})", "rate_limit_error",
                           model=model)
        return model, path, body, injected

    def _route_model(
        self, dep: Deployment, path: str, body: bytes
    ) -> tuple[str | None, str, bytes, bool, tuple[int, str, dict[str, Any]] | None]:
        """Pick the model (URL segment or body), apply body limits; returns (model, path, body, injected, error)."""
        models = dep.models
        model: str | None = None
        segments = path.lstrip("/").split("/", 1)
        # A model segment ahead of the engine path: .../<route>/<model>/v1/...
        if models and segments[0] in models and segments[0] not in ("v1", "health"):
            model = segments[0]
            path = "/" + (segments[1] if len(segments) > 1 else "")
        payload_limit = self._payload_limit(dep, model)
        if len(body) > payload_limit:
            message = f"request body of {len(body)} bytes exceeds the limit of {payload_limit} bytes"
            return model, path, body, False, (413, message, {})
        injected = False
        content_type = self.request.headers.get("Content-Type", "")
        if body and "json" in content_type:
            try:
                data = json.loads(body)
            except ValueError:
                return model, path, body, False, (400, "request body is not valid JSON", {})
            if isinstance(data, dict):
                changed = False
                if model is not None and data.get("model") != model:
                    data["model"] = model
                    changed = True
                elif model is None and isinstance(data.get("model"), str):
                    if len(models) > 1 and data["model"] not in models:
                        return model, path, body, False, (
                            404,
                            f"model {data['model']!r} does not exist; this deployment serves: {', '.join(models)}",
                            {"models": models},
                        )
                    model = data["model"]
                batch_limit = self._client_batch_limit(dep, model)
                inputs = data.get("input", data.get("inputs"))
                if batch_limit is not None and isinstance(inputs, list) and len(inputs) > batch_limit:
                    return model, path, body, False, (
                        422,
                        f"{len(inputs)} inputs in one request exceed max_client_batch_size={batch_limit}",
                        {},
                    )
                if dep.plan and dep.plan.stream_usage and wants_usage_injection(data):
                    data["stream_options"] = {"include_usage": True}
                    injected = changed = True
                if changed:
                    body = json.dumps(data).encode()
        if model is None and len(models) == 1:
            model = models[0]
        return model, path, body, injected, None

    def _entry(self, dep: Deployment, model: str | None) -> Any:
        entries = getattr(dep.config, "models", None)
        if not isinstance(entries, list):
            return None
        for entry in entries:
            if getattr(entry, "name", None) == model:
                return entry
        return entries[0] if entries else None

    def _payload_limit(self, dep: Deployment, model: str | None) -> int:
        entry = self._entry(dep, model)
        limit = getattr(entry, "payload_limit_bytes", None) or getattr(dep.config, "payload_limit_bytes", None)
        return int(limit or self.gateway.config.default_payload_limit)

    def _client_batch_limit(self, dep: Deployment, model: str | None) -> int | None:
        entry = self._entry(dep, model)
        return getattr(entry, "max_client_batch_size", None)

    async def _forward(
        self, dep: Deployment, path: str, body: bytes, injected: bool
    ) -> tuple[int, UsageTap | None, float | None]:
        gateway = self.gateway
        headers = [(k, v) for k, v in self.request.headers.get_all() if k.lower() not in STRIPPED_REQUEST]
        headers.append(("Authorization", f"Bearer {dep.engine_key}"))
        target = f"{path}?{self.request.query}" if self.request.query else path
        started = time.perf_counter()
        timeout = gateway.config.upstream_timeout_s
        try:
            upstream = await gateway.pool.request(
                "127.0.0.1", dep.port or 0, self.request.method or "GET", target, headers, body, timeout=timeout
            )
        except UpstreamTimeout as exc:
            self.fail(504, f"the engine did not answer: {exc}", "timeout_error")
            return 504, None, None
        except UpstreamError as exc:
            self.fail(502, f"the engine is not reachable: {exc}", "upstream_error")
            return 502, None, None
        self._upstream = upstream
        first_chunk: float | None = None
        tap = UsageTap(upstream.headers.get("Content-Type", ""), drop_usage_only_events=injected)
        streaming = tap.is_sse or "Content-Length" not in upstream.headers
        try:
            self.set_status(upstream.status, upstream.reason or httputil.responses.get(upstream.status))
            seen: set[str] = set()
            for name, value in upstream.headers.get_all():
                lower = name.lower()
                if lower in STRIPPED_RESPONSE:
                    continue
                if lower in seen:
                    self.add_header(name, value)
                else:
                    self.set_header(name, value)  # replaces tornado's defaults (Content-Type)
                    seen.add(lower)
            if tap.is_sse or injected:
                self.clear_header("Content-Length")
            async for chunk in upstream.iter_body():
                if self._client_gone:
                    upstream.close()
                    break
                if first_chunk is None:
                    first_chunk = time.perf_counter() - started
                out = tap.feed(chunk)
                if out:
                    self.write(out)
                    if streaming:
                        await self.flush()
        except UpstreamTimeout:
            upstream.close()
            if not self._headers_written:
                self.clear()
                self.fail(504, "the engine stopped answering", "timeout_error")
                return 504, tap, first_chunk
            return upstream.status, tap, first_chunk
        except (UpstreamError, iostream.StreamClosedError):
            upstream.close()
            return upstream.status, tap, first_chunk
        finally:
            self._upstream = None
        if not self._client_gone:
            self.finish()
        return upstream.status, tap, first_chunk
