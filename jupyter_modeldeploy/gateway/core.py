"""What the endpoint handler asks of the gateway it runs in: state to admit with, counters, reports.

The same exchange (`exchange.EndpointExchange`) serves endpoint requests in two processes: in the
gateway worker, which owns endpoint traffic (`relay.worker_gateway.WorkerGateway`: views published
by the server, its own counters, records reported back), and on the Jupyter server's own loop
while no worker serves (`server_gateway.Gateway`: the supervisor's deployments and the key registry).
Both implement `GatewayCore`; nothing in the handler knows which one it has.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .quotas import QuotaBook
from .records import RequestRecord
from .upstream import UpstreamClient
from .waiting_line import WaitingLine

if TYPE_CHECKING:
    from tornado.httpserver import HTTPServer
    from tornado.web import RequestHandler

    from ..supervisor.replicas import Replica
    from .tokens import TokenInfo

DEFAULT_PAYLOAD_LIMIT = 16 << 20


@dataclass
class GatewayConfig:
    """Gateway settings (from the extension's traitlets)."""

    upstream_timeout_s: float = 600.0
    connect_timeout_s: float = 10.0
    default_payload_limit: int = DEFAULT_PAYLOAD_LIMIT
    wake: Callable[[Any], Awaitable[None]] | None = None  # wakes a sleeping engine (the server's)
    observers: list[Callable[[RequestRecord], None]] = field(default_factory=list)
    plain_requests: bool = True  # the worker answers plain requests in callbacks (`relay.plain`)
    # The tornado server that serves a connection whose hand-over to the worker failed.
    http_server: Callable[[], HTTPServer] | None = None


class GatewayCore:
    """State, counters and reports of one gateway process; see the module's docstring."""

    def __init__(self, config: GatewayConfig | None = None):
        self.config = config or GatewayConfig()
        self.quotas = QuotaBook()
        self.upstream = UpstreamClient(connect_timeout=self.config.connect_timeout_s)
        self.lines: dict[str, WaitingLine] = {}  # each deployment's requests waiting for a slot, by id

    def line(self, dep: Any) -> WaitingLine:
        """A deployment's waiting line (`waiting_line`), made when first asked for."""
        line = self.lines.get(dep.id)
        if line is None:
            deployment_id = dep.id
            line = self.lines[deployment_id] = WaitingLine(lambda changed: self.line_changed(deployment_id, changed))
        return line

    def line_changed(self, deployment_id: str, line: WaitingLine) -> None:
        """A deployment's waiting line changed (a request joined, left, got its slot, or was refused for it)."""

    @property
    def default_payload_limit(self) -> int:
        return self.config.default_payload_limit

    # What admission reads (admission.AdmissionState) ---------------------------------------

    def by_route(self, route: str) -> Any:
        """The deployment (or its view) at an endpoint route."""
        raise NotImplementedError

    def lookup(self, key: str) -> TokenInfo | None:
        """A generated key's info by its value."""
        raise NotImplementedError

    def key_belongs_elsewhere(self, key: str, dep: Any) -> bool:
        """Whether a key is the fixed key of another deployment (so the answer is 403, not 401)."""
        raise NotImplementedError

    # What the handler reports ---------------------------------------------------------------

    def settle(self) -> None:
        """Take in every change already sent to this process (before admitting a request)."""

    async def hand_off(self, handler: RequestHandler) -> bool:
        """Give the handler's connection to the process that owns endpoint traffic; False: serve it here."""
        return False

    def touch(self, info: TokenInfo, now: float) -> None:
        """A generated key was just used."""

    def request_started(self, dep: Any, book: str | None) -> None:
        """A request took its deployment's concurrency slot (and a place in quota book `book`)."""
        raise NotImplementedError

    def request_finished(self, dep: Any, book: str | None, tokens: int) -> None:
        """A request gave its deployment's slot back (and its place in `book`, having used `tokens`)."""
        raise NotImplementedError

    def replica_unreachable(self, dep: Any, replica: Replica, reason: str) -> None:
        """A replica could not be connected to (it leaves the rotation)."""

    def replica_load(self, dep: Any, replica: Replica, delta: int) -> None:
        """A request was sent to a replica (+1) or left it (-1): its in-flight count, which the least-loaded choice
        reads and a replica being removed drains."""
        replica.in_flight += delta

    async def wake(self, dep: Any) -> None:
        """Wake a sleeping deployment for a caller with a valid key; returns once it serves (or cannot)."""

    def observe(self, record: RequestRecord, *, claimed: bool) -> None:
        """A finished request's record (`claimed`: it had taken its slot), before its client can tell it ended."""
        for observer in self.config.observers:
            observer(record)

    async def close(self) -> None:
        """Close the upstream pools."""
        await self.upstream.close()
