"""`GET /modeldeploy/endpoints/<route>/metrics`: one deployment's Prometheus metrics, for its keys.

Reached with a deployment key (any role: a `read` key is meant for this), not with the Jupyter
login; it shows only the samples of that deployment (requests, latency, tokens, in flight, per key).
"""

from __future__ import annotations

import time

from prometheus_client.exposition import choose_encoder
from tornado import web

from ..gateway import admission
from ..gateway.refusals import Refusal, refusal_document
from ..gateway.server_gateway import Gateway
from ..metrics.hub import MetricsHub
from ..metrics.prometheus import OneDeployment

#: Matched before the gateway's catch-all pattern; no engine declares a /metrics serving route.
ENDPOINT_METRICS_PATTERN = r"/modeldeploy/endpoints/(?P<route>[A-Za-z0-9_.~-]+)/metrics"


class EndpointMetricsHandler(web.RequestHandler):
    """Prometheus text of one deployment, to a caller with one of its keys."""

    def initialize(self, gateway: Gateway, hub: MetricsHub) -> None:
        self.gateway = gateway
        self.hub = hub

    def check_xsrf_cookie(self) -> None:
        """Called with a key, not a browser cookie."""

    def _error(self, refusal: Refusal) -> None:
        self.set_status(refusal.status)
        for name, value in refusal.headers.items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json")
        self.finish(refusal_document(refusal))

    async def get(self, route: str) -> None:
        await self.gateway.synced()  # every request whose answer ended is counted
        dep = self.gateway.supervisor.by_route(route)
        if dep is None:
            self._error(Refusal(404, "no deployment at this route", "not_found_error"))
            return
        # The key is checked by the gateway's one admission; any role may read (a `read` key is meant for this).
        found = admission.Admission(dep=dep)
        head = admission.RequestHead(self.request.method or "GET", self.request.path, self.request.query,
                                     self.request.headers)
        refusal = admission.identify(found, head, self.gateway, time.time())
        if refusal is not None:
            self._error(refusal)
            return
        if found.key is not None:
            self.gateway.tokens.touch(found.key, time.time())
        encode, content_type = choose_encoder(self.request.headers.get("Accept", ""))
        self.set_header("Content-Type", content_type)
        self.finish(encode(OneDeployment(self.hub.registry, dep.id)))  # type: ignore[arg-type]
