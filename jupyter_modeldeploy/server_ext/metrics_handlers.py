"""REST routes of the metrics: chart series as JSON and Prometheus exposition, under Jupyter auth.

The metrics themselves (`metrics/`) know no HTTP; these handlers only render them.
"""

from __future__ import annotations

from jupyter_server.base.handlers import APIHandler
from prometheus_client.exposition import choose_encoder
from tornado import web

from ..metrics.hub import MetricsHub
from ..supervisor import DeploymentError
from .handlers import BaseHandler
from .schemas import DeploymentMetrics, HostMetrics


def _since(handler: APIHandler) -> float | None:
    raw = handler.get_query_argument("since", None)
    if raw in (None, ""):
        return None
    try:
        return float(raw)
    except ValueError:
        raise web.HTTPError(400, "since must be a Unix timestamp in seconds") from None


class MetricsBase(BaseHandler):
    @property
    def hub(self) -> MetricsHub:
        return self.settings["modeldeploy_metrics"]


class DeploymentMetricsHandler(MetricsBase):
    """GET a deployment's series since a timestamp."""

    @web.authenticated
    async def get(self, ref: str) -> None:
        try:
            dep = self.supervisor.get(ref)
        except DeploymentError as exc:
            self.fail(exc.status, str(exc))
            return
        self.write_json(DeploymentMetrics.model_validate(self.hub.deployment_json(dep, _since(self))).model_dump())


class HostMetricsHandler(MetricsBase):
    """GET the host's (and GPUs') series since a timestamp."""

    @web.authenticated
    async def get(self) -> None:
        self.write_json(HostMetrics.model_validate(self.hub.host_json(_since(self))).model_dump())


class PrometheusHandler(MetricsBase):
    """GET every metric for Prometheus: text format 0.0.4, or OpenMetrics when the Accept header asks."""

    @web.authenticated
    async def get(self) -> None:
        encode, content_type = choose_encoder(self.request.headers.get("Accept", ""))
        self.set_header("Vary", "Accept")
        # APIHandler.finish would set application/json, which Prometheus 3 refuses to scrape.
        self.finish(encode(self.hub.registry), set_content_type=content_type)


def metrics_handlers(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    return [
        (rf"{prefix}/deployments/(?P<ref>[^/]+)/metrics", DeploymentMetricsHandler),
        (rf"{prefix}/host/metrics", HostMetricsHandler),
        (rf"{prefix}/metrics", PrometheusHandler),
    ]
