"""A lease: what the relay worker may serve itself on a client connection the Jupyter server handed it.

The Jupyter server admits a request in full (key, state, allow-list, limits, quotas) and, where
the caller's next requests can be decided from what it already checked, hands the connection to
the relay worker with a `Lease`. The worker then serves that connection's next requests without
the Jupyter server's loop, as long as each is one the server would certainly have forwarded the
same way: the same endpoint, key and origin, a declared route, a plain body within the limits.
Any doubt, and the worker gives the connection back with the request unread: every refusal and
every unusual request is still the server's to answer (`Lease.admit` returns None).

A lease stops holding when anything it was made from changes (a deployment's state, a key's
expiry, quotas or revocation): the server then raises the generation it sends the worker, and
leases of an older generation admit nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from ..engines.base import ModelLimits, limits_for
from .body import prepare_body
from .headers import presented_key, request_headers
from .records import model_label
from .request_head import PeekedRequest


def fingerprint(key: str | None) -> str | None:
    """What a lease holds of a key: its SHA-256, never the key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest() if key is not None else None


@dataclass
class LeasedRequest:
    """A request the worker forwards under a lease: the job for `relay_worker.relay`, and its record."""

    job: dict[str, Any]
    body: bytes
    model: str | None  # the record's model label
    path: str  # the engine path


@dataclass
class Lease:
    """Everything the worker needs to serve a connection's next requests exactly as the server would."""

    generation: int
    deployment_id: str
    prefix: str  # the endpoint's raw path, up to and with its route segment
    key: str | None  # the fingerprint of the key the caller presented; None: a public deployment
    key_id: str  # the key's id in records
    expires_at: float | None  # the key's expiry
    origin: str | None  # the Origin the CORS headers below were made for
    cors: dict[str, str]
    routes: dict[str, list[str]]  # engine path -> the methods this key may use on it
    models: list[str]
    limits: dict[str, dict[str, int | None]]  # per served model, as ModelLimits
    payload_limit: int  # the largest body, before the model is known
    stream_usage: bool
    max_in_flight: int | None  # the deployment's concurrency limit
    address: dict[str, Any]
    engine_key: str
    timeout_s: float
    server_in_flight: int = 0  # requests the server had in flight for the deployment when it made the lease
    _limits: dict[str, ModelLimits] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._limits = {name: ModelLimits(**values) for name, values in self.limits.items()}

    def to_json(self) -> dict[str, Any]:
        """The lease as it travels to the worker."""
        data = asdict(self)
        data.pop("_limits")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lease:
        """A lease as the worker received it."""
        return cls(**data)

    def admit(self, request: PeekedRequest, *, now: float, in_flight: int) -> LeasedRequest | None:
        """The request to forward, when the server would certainly forward it as this lease says;
        None when the server must see it (a refusal, or anything this lease was not made for).

        `in_flight`: this deployment's requests the worker has in flight."""
        target = request.target
        if "?" in target or "#" in target or not target.startswith(self.prefix + "/"):
            return None
        path = target[len(self.prefix):]
        if request.method not in self.routes.get(path, ()):
            return None
        presented = presented_key(request.header("Authorization"), request.header("x-api-key"))
        if self.key is not None and fingerprint(presented) != self.key:
            return None
        if (self.expires_at is not None and now >= self.expires_at) or request.header("Origin") != self.origin:
            return None
        if len(request.body) > self.payload_limit:
            return None
        if self.max_in_flight is not None and self.server_in_flight + in_flight >= self.max_in_flight:
            return None
        prepared = prepare_body(
            request.body, request.header("Content-Type") or "", engine_path=path, model=None, models=self.models,
            limits_for=lambda model: limits_for(self._limits, model), stream_usage=self.stream_usage,
        )
        if prepared.refusal is not None:
            return None
        job = {
            "method": request.method, "target": path, "address": self.address,
            "headers": [*request_headers(request.headers), ("Authorization", f"Bearer {self.engine_key}")],
            "injected": prepared.injected, "cors": self.cors, "timeout_s": self.timeout_s,
            "keep_alive": request.keep_alive,
        }
        return LeasedRequest(job, prepared.body, model_label(self.models, prepared.model), path)
