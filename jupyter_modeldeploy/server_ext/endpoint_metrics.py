"""`GET /modeldeploy/endpoints/<route>/metrics`: one deployment's Prometheus metrics, for its keys.

Reached with a deployment key (any role: a `read` key is meant for this), not with the Jupyter
login; it shows only the samples of that deployment (requests, latency, tokens, in flight, per key).
"""

from __future__ import annotations

import time

from prometheus_client.exposition import choose_encoder
from tornado import web

from ..gateway.auth import authorize, presented_key
from ..gateway.proxy import Gateway, error_body
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

    def _error(self, status: int, message: str, kind: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(error_body(message, kind, status))

    async def get(self, route: str) -> None:
        dep = self.gateway.supervisor.by_route(route)
        if dep is None:
            self._error(404, "no deployment at this route", "not_found_error")
            return
        key = presented_key(self.request.headers.get("Authorization"), self.request.headers.get("x-api-key"))
        token = self.gateway.tokens.lookup(key) if key else None
        decision = authorize(key, deployment_id=dep.id, project=dep.config.project, public=dep.config.public,
                             api_key_hash=dep.api_key_hash, token=token, now=time.time())
        if not decision.allowed:
            kind = "authentication_error" if decision.status == 401 else "permission_error"
            self._error(decision.status, decision.message, kind)
            return
        if token is not None and decision.token_id is not None:
            self.gateway.tokens.touch(token, time.time())
        encode, content_type = choose_encoder(self.request.headers.get("Accept", ""))
        self.set_header("Content-Type", content_type)
        self.finish(encode(OneDeployment(self.hub.registry, dep.id)))  # type: ignore[arg-type]
