"""The gateway's endpoints on tornado: `/modeldeploy/endpoints/<route>/...` to the deployment's engine.

A plain tornado handler (no Jupyter login: callers present a deployment key) that carries one
`exchange.EndpointExchange` and is its `Wire`. It decides nothing itself. On the Jupyter server it
first offers the connection to the gateway worker, which owns endpoint traffic (`prepare` →
`hand_off`, after the first request's head), and serves it itself only while no worker serves, or
when the connection cannot be handed over (TLS, HTTP/1.0).
"""

from __future__ import annotations

import logging
from typing import Any

from tornado import httputil, web

from .admission import RequestHead
from .core import GatewayCore
from .exchange import EndpointExchange, WireFlags
from .response_head import http_date

log = logging.getLogger(__name__)

#: The handler's URL pattern: no capture groups, so tornado never decodes any part of the path.
ENDPOINT_PATTERN = r"/modeldeploy/endpoints/.+"


@web.stream_request_body
class EndpointHandler(WireFlags, web.RequestHandler):
    """Proxies one request to a deployment's engine (tornado's side of an `EndpointExchange`)."""

    SUPPORTED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")  # type: ignore[assignment]

    def initialize(self, gateway: GatewayCore, door: str = "jupyter") -> None:
        self.gateway = gateway
        self.door = door
        request = self.request
        head = RequestHead(request.method or "GET", request.path, request.query, request.headers)
        self.exchange = EndpointExchange(gateway, self, head, request.headers, door)

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
            log.warning("%d %s %s", self.get_status(), self.request.method, self.exchange.admission.engine_path)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Any error tornado raises itself (a bad request line...) as an error in the route's dialect."""
        self.set_header("Content-Type", "application/json")
        self.finish(self.exchange.refusal_body(status_code, self._reason))

    def on_connection_close(self) -> None:
        self.exchange.connection_closed()

    async def prepare(self) -> None:
        if await self.gateway.hand_off(self):
            self._finished = True  # the connection is the worker's now: nothing more happens here
            return
        await self.exchange.admit_head()

    def data_received(self, chunk: bytes) -> None:
        if not self._finished:
            self.exchange.receive(chunk)

    async def get(self, *args: str, **kwargs: str) -> None:
        await self.exchange.answer()

    post = put = patch = delete = options = head = get  # type: ignore[assignment]

    # The exchange's wire -------------------------------------------------------------------

    def send(self, chunk: bytes) -> None:
        """Body bytes, as they are."""
        web.RequestHandler.write(self, chunk)

    def abort(self) -> None:
        """End the client's connection without a clean end of body."""
        stream = getattr(self.request.connection, "stream", None)
        if stream is not None:
            stream.close()
