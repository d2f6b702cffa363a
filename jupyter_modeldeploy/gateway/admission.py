"""The one admission of an endpoint request: may it reach the engine, and with what.

Every path that serves an endpoint request asks these functions, and decides nothing itself:

- `admit(head, state, now)`: everything the request line and headers decide (the deployment,
  the path in its one normal form, a CORS preflight, `/health`, the key, the deployment's state,
  the engine's allow-list and methods, the declared length, the key's role). Pure: the same
  head and state give the same answer on every path.
- `take(admission, ...)`: the deployment's concurrency slot and the key's quota place, each
  claimed in the same step that checks it (no await in between: two requests arriving together
  cannot both pass a limit of one).
- `admit_body(admission, body, content_type)`: once the body is read, the model, its limits and
  the key's model scope.

A refusal carries the dialect of the route it answers (OpenAI, TEI, Anthropic; `refusals`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ..engines.routes import Dialect
from ..supervisor.replicas import pick
from ..supervisor.state import Status
from .auth import authorize, model_refusal, presented_key, role_refusal
from .body import prepare_body
from .headers import cors_headers, origin_allowed, preflight_headers
from .paths import PathError, check_query, normalise_path
from .quotas import QuotaBook
from .records import FIXED_KEY_ID, NO_KEY_ID, model_label
from .refusals import Refusal
from .tokens import Quotas, TokenInfo
from .view import Served
from .waiting_line import PRIORITY_CLASSES, Turn, WaitingLine

ENDPOINTS_MARKER = "/modeldeploy/endpoints/"
#: A refused request's body is read and dropped, keeping its connection, up to this size; a larger
#: one (or one that waits for `100 Continue`) is refused with `Connection: close` and not read.
DRAIN_LIMIT = 64 * 1024


@dataclass(frozen=True)
class RequestHead:
    """What a request line and its headers say, as received."""

    method: str
    path: str  # the raw path of the request line, without its query
    query: str
    headers: Mapping[str, str]  # case-insensitive, as an HTTP server hands them over

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class AdmissionState(Protocol):
    """What admission reads of the gateway's state: deployments by route and keys by value."""

    default_payload_limit: int

    def by_route(self, route: str) -> Served | None: ...

    def lookup(self, key: str) -> TokenInfo | None: ...

    def key_belongs_elsewhere(self, key: str, dep: Served) -> bool: ...


@dataclass
class Admission:
    """What admission found out about a request; `refusal` is None when it may go on."""

    refusal: Refusal | None = None
    dep: Served | None = None
    engine_path: str = "/"
    query: str = ""
    model: str | None = None  # named by the URL (`<endpoint>/<model>/...`) or, later, by the body
    body_limit: int = 0
    cors: dict[str, str] = field(default_factory=dict)
    key: TokenInfo | None = None  # the generated key presented, once accepted
    key_id: str = NO_KEY_ID
    presented: str | None = None  # the key as presented (never logged or stored)
    dialect: Dialect = "openai"
    wake: bool = False  # refused only because the engine sleeps: wake it, then admit again

    def refuse(self, refusal: Refusal) -> Admission:
        self.refusal = refusal
        return self

    def model_label(self) -> str:
        return model_label(self.dep.models if self.dep else [], self.model)


def admit(head: RequestHead, state: AdmissionState, now: float) -> Admission:
    """Decide a request from its head alone (see the module's docstring)."""
    raw = head.path
    at = raw.find(ENDPOINTS_MARKER)
    route, _, rest = raw[at + len(ENDPOINTS_MARKER):].partition("/") if at >= 0 else ("", "", "")
    found = Admission()
    dep = state.by_route(route) if route else None
    if dep is None:
        return found.refuse(Refusal(404, "no deployment at this route", "not_found_error"))
    found.dep = dep
    try:
        path = normalise_path("/" + rest)
        found.query = check_query(head.query)
    except PathError as exc:
        return found.refuse(Refusal(400, str(exc), "invalid_request_error"))
    found.engine_path = path
    if dep.plan is not None:
        found.dialect = dep.plan.routes.dialect(path)
    origin = head.header("Origin")
    allowed_origins = dep.config.cors_allow_origins
    found.cors = cors_headers(origin, allowed_origins)
    method = head.method
    if method == "OPTIONS" and origin and head.header("Access-Control-Request-Method") is not None:
        return found.refuse(_preflight(head, origin, allowed_origins))
    if path == "/health" and method in ("GET", "HEAD"):
        serving = dep.status.serving
        return found.refuse(Refusal(200 if serving else 503, "", "", extra={
            "status": "ok" if serving else "unavailable", "state": dep.status.value}))
    refusal = identify(found, head, state, now)
    if refusal is not None:
        return found.refuse(refusal)
    asleep = _state_refusal(dep)
    if asleep is not None:
        found.wake = dep.status in (Status.SLEEPING, Status.WAKING)
        if not found.wake or dep.plan is None:
            return found.refuse(asleep)
    # A sleeping deployment is woken only for a request it would take: its route, method and length first.
    refusal = _route_refusal(found, head, state)
    if refusal is None:
        denied = role_refusal(found.key, method)
        if denied is not None:
            refusal = Refusal(denied.status, denied.message, "permission_error")
    if refusal is not None:
        found.wake = False
        return found.refuse(refusal)
    return found.refuse(asleep) if asleep is not None else found


def identify(found: Admission, head: RequestHead, state: AdmissionState, now: float) -> Refusal | None:
    """The presented key, checked against `found.dep` (also for `/metrics`); None when the caller may use it."""
    dep = found.dep
    assert dep is not None
    key = presented_key(head.header("Authorization"), head.header("x-api-key"))
    found.presented = key
    token = state.lookup(key) if key else None
    decision = authorize(key, deployment_id=dep.id, project=dep.config.project, public=dep.config.public,
                         api_key_hash=dep.api_key_hash, token=token, now=now)
    if decision.allowed:
        if token is not None and decision.token_id is not None:
            found.key, found.key_id = token, token.id
        elif key is not None and not dep.config.public:
            found.key_id = FIXED_KEY_ID
        return None
    if decision.status == 401 and key and state.key_belongs_elsewhere(key, dep):
        return Refusal(403, "this key is not valid for this deployment", "permission_error")
    if decision.status == 401:
        return Refusal(401, decision.message, "authentication_error",
                       headers={"WWW-Authenticate": 'Bearer realm="modeldeploy"'})
    return Refusal(decision.status, decision.message, "permission_error")


def _preflight(head: RequestHead, origin: str, allowed: list[str]) -> Refusal:
    if not origin_allowed(origin, allowed):
        return Refusal(403, f"origin {origin[:200]!r} may not call this endpoint", "permission_error")
    headers = preflight_headers(origin, allowed, head.header("Access-Control-Request-Headers"))
    return Refusal(204, "", "", headers=headers)


def _state_refusal(dep: Served) -> Refusal | None:
    """503 unless the deployment serves now (a sleeping one wakes for a caller with a valid key)."""
    name = dep.name
    if dep.status is Status.LOADING:
        return Refusal(503, f"deployment {name!r} is still loading", "unavailable_error", headers={"Retry-After": "5"})
    if dep.status is Status.UNHEALTHY:
        return Refusal(503, f"deployment {name!r} is not answering its health checks", "unavailable_error",
                       headers={"Retry-After": "5"})
    if dep.status is Status.STOPPING:
        return Refusal(503, f"deployment {name!r} is stopping", "unavailable_error")
    if not dep.status.answering or dep.plan is None or pick(dep.replicas) is None:
        return Refusal(503, f"deployment {name!r} is {dep.status.value}; relaunch it", "unavailable_error")
    return None


def _route_refusal(found: Admission, head: RequestHead, state: AdmissionState) -> Refusal | None:
    """The engine's allow-list, the route's methods and the declared length; sets the engine path and limit."""
    dep = found.dep
    assert dep is not None and dep.plan is not None
    plan = dep.plan
    path = found.engine_path
    segments = path.split("/", 2)
    route = plan.routes.find(path)
    if segments[1] in dep.models and len(segments) > 2 and segments[1] not in ("v1", "health"):
        # <endpoint>/<model>/...: that model's own route, or a shared route with the model chosen.
        found.model = segments[1]
        inner = "/" + segments[2]
        route = plan.routes.find(inner)
        if route is not None and not (route.model_scoped or plan.model_routes):
            path = inner
            found.dialect = plan.routes.dialect(inner)
    if route is None:
        return Refusal(404, f"{path} is not part of this deployment's serving API", "not_found_error")
    if head.method not in route.methods:
        return Refusal(405, f"{path} does not take {head.method}", "invalid_request_error",
                       headers={"Allow": ", ".join(sorted(route.methods))})
    found.engine_path = path
    limit = plan.limits_for(found.model).payload_limit_bytes if found.model else plan.largest_payload_limit()
    found.body_limit = int(limit or state.default_payload_limit)
    length = head.header("Content-Length")
    if length is not None:
        if not length.isdigit():
            return Refusal(400, "Content-Length must be a number of bytes", "invalid_request_error")
        if int(length) > found.body_limit:
            return Refusal(413, f"request body of {length} bytes exceeds the limit of {found.body_limit} bytes",
                           "invalid_request_error")
    return None


class Claim:
    """An admitted request's place: its deployment's concurrency slot (or its turn in the deployment's waiting
    line, `turn`) and its key's quota place, given back once."""

    def __init__(self, dep: Served, finished: Callable[[Served, str | None, int], None], quotas: QuotaBook,
                 book: str | None, line: WaitingLine, turn: Turn | None = None):
        self._dep: Served | None = dep
        self._finished = finished
        self._quotas = quotas
        self._book = book
        self._line = line
        self.turn = turn  # while it waits for a slot: resolved once the slot is taken for it

    @property
    def waiting(self) -> bool:
        """Whether it still waits for its slot."""
        return self.turn is not None and not self.turn.granted.done()

    def release(self, tokens: int, now: float) -> None:
        """Give the places back (the tokens the request used count in its key's quotas); later calls do nothing.
        A slot given back goes to the next turn in the line; a turn that had not come leaves the line."""
        dep, self._dep = self._dep, None
        if dep is None:
            return
        if self._book is not None:
            self._quotas.release(self._book, tokens, now)
        line, turn = self._line, self.turn
        if turn is not None and line.leave(turn):
            return  # it never had a slot
        self._finished(dep, self._book, tokens)
        if line.depth:
            line.grant(lambda: _slot_free(dep))


def _slot_free(dep: Served) -> bool:
    limit = dep.plan.max_concurrent_requests if dep.plan is not None else None
    return limit is None or dep.in_flight < limit


def take(found: Admission, *, started: Callable[[Served, str | None], None],
         finished: Callable[[Served, str | None, int], None],
         quotas: QuotaBook, now: float, line: WaitingLine) -> Claim | Refusal:
    """Claim an admitted request's places, each checked and taken in one step; a Refusal takes none.

    At the concurrency limit, a request takes a turn in the deployment's waiting `line` while it has room
    (`queue_size`), and its slot once the turn comes; past that, 429."""
    dep = found.dep
    assert dep is not None and dep.plan is not None
    limit = dep.plan.max_concurrent_requests
    if line.depth:
        line.grant(lambda: _slot_free(dep))  # slots a raised limit freed go to those already waiting
    queued = limit is not None and (dep.in_flight >= limit or line.depth > 0)
    if queued:
        size = dep.config.queue_size
        if line.depth >= size:
            line.reject()
            return Refusal(429, f"too many requests in flight (max_concurrent_requests={limit}) and the queue is "
                           f"full (queue_size={size})", "rate_limit_error", headers={"Retry-After": "1"})
    book, key_quotas = _quota_book(found)
    if book is not None and key_quotas is not None:
        exceeded = quotas.admit(book, key_quotas, now)
        if exceeded is not None:
            return Refusal(429, exceeded.message(), "rate_limit_error", extra={"param": exceeded.quota},
                           headers={"Retry-After": str(exceeded.retry_after_s)}, code="rate_limit_exceeded")
    if queued:
        priority = PRIORITY_CLASSES.get(found.key.priority if found.key is not None else "interactive", 0)
        turn = line.join(found.key_id, priority, lambda: started(dep, book))
        return Claim(dep, finished, quotas, book, line, turn)
    started(dep, book)
    return Claim(dep, finished, quotas, book, line)


def _quota_book(found: Admission) -> tuple[str | None, Quotas | None]:
    """The quota book a request counts in: a generated key's own, or the fixed key's `api_key_quotas`."""
    key, dep = found.key, found.dep
    assert dep is not None
    if key is not None and key.quotas is not None:
        return key.id, key.quotas
    if found.key_id == FIXED_KEY_ID and (fixed := dep.config.api_key_quotas.limits()):
        return f"{FIXED_KEY_ID}:{dep.id}", Quotas(**fixed)
    return None, None


@dataclass
class AdmittedBody:
    """The body to forward, or why it is refused."""

    body: bytes
    injected: bool = False  # the gateway asked the engine for stream usage itself
    stream: bool = False  # the body asks for a streamed answer
    refusal: Refusal | None = None


def admit_body(found: Admission, body: bytes, content_type: str, method: str) -> AdmittedBody:
    """The model (from the URL, else the body), its payload and batch limits, and the key's model scope."""
    dep = found.dep
    assert dep is not None and dep.plan is not None
    priority = None
    if dep.plan.request_priority:
        priority = PRIORITY_CLASSES[found.key.priority if found.key is not None else "interactive"]
    prepared = prepare_body(body, content_type, engine_path=found.engine_path, model=found.model, models=dep.models,
                            limits_for=dep.plan.limits_for, stream_usage=dep.plan.stream_usage, priority=priority)
    found.model = prepared.model
    refused = prepared.refusal
    if refused is not None:
        return AdmittedBody(body, stream=prepared.stream,
                            refusal=Refusal(refused.status, refused.message, refused.kind, refused.extra or {}))
    if found.model is not None or method not in ("GET", "HEAD"):
        chosen = found.model if found.model is not None else model_label(dep.models, None)
        denied = model_refusal(found.key, chosen)
        if denied is not None:
            return AdmittedBody(body, stream=prepared.stream,
                                refusal=Refusal(denied.status, denied.message, "permission_error"))
    return AdmittedBody(prepared.body, prepared.injected, prepared.stream)
