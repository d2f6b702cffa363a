"""The Jupyter server extension: settings as traitlets, the supervisor, REST and gateway routes."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from tornado import web
from traitlets import Bool, Dict, Enum, Float, Int, Unicode, default

from ..engines import EngineSettings
from ..gateway.core import GatewayConfig
from ..gateway.proxy import ENDPOINT_PATTERN, EndpointHandler
from ..gateway.relay.plane import WorkerSettings
from ..gateway.server_gateway import Gateway
from ..gateway.tokens import TokenRegistry
from ..supervisor import Supervisor
from ..supervisor.ray_placement import RaySettings
from .cleanup import clean_up_after_delete
from .dashboard import dashboard_handlers
from .handlers import api_handlers
from .jupyter_ai_handlers import jupyter_ai_handlers
from .server_activity import ServerActivity
from .share_handlers import share_handlers
from .sharing import DEFAULT_SHARE_SERVICE, HubContext, ShareDesk
from .validate import validate_handlers
from .views import view_handlers
from .writer import BatchWriter

#: The longest Unix socket path the platform takes (sun_path is 108 bytes on Linux, with its NUL).
MAX_SOCKET_PATH = 100


class ModelDeployApp(ExtensionApp):
    """Serve models from Jupyter: supervises engines and exposes them through the gateway."""

    name = "jupyter_modeldeploy"
    description = "Model deployments with authenticated OpenAI-compatible endpoints"

    state_dir = Unicode(
        help="Folder for the deployment store, engine logs and key files (default: <jupyter data dir>/modeldeploy)."
    ).tag(config=True)
    llamacpp_server = Unicode(
        None, allow_none=True, help="Path of llama-server (default: the build from 'install-engine llamacpp')."
    ).tag(config=True)
    llamacpp_engine = Enum(
        ["auto", "llama-server", "llama-cpp-python"],
        default_value="auto",
        help="Which llama.cpp server to run: llama-server when built (auto), or llama-cpp-python's fallback.",
    ).tag(config=True)
    llamacpp_python = Unicode(
        None, allow_none=True, help="Python with llama-cpp-python for the fallback server (default: this one)."
    ).tag(config=True)
    vllm_python = Unicode(
        None, allow_none=True,
        help="Python of the vLLM environment for 'llm' deployments (default: the one from "
        "'install-engine llm', else this one).",
    ).tag(config=True)
    embedding_python = Unicode(
        None, allow_none=True, help="Python with sentence-transformers for 'embedding' deployments (default: this one)."
    ).tag(config=True)
    health_timeout_s = Float(900.0, help="Seconds an engine may take to become healthy before it counts as failed.").tag(
        config=True
    )
    stop_grace_s = Float(10.0, help="Seconds between SIGTERM and SIGKILL when stopping an engine.").tag(config=True)
    upstream_timeout_s = Float(
        600.0, help="Seconds the gateway waits for an engine's answer before replying 504."
    ).tag(config=True)
    gateway_worker = Bool(
        True,
        help="Serve endpoint traffic in a gateway worker process of its own (the server hands it each endpoint "
        "connection after the first request's head), so endpoint load does not slow the Jupyter server's own "
        "requests; it also listens on a Unix socket (0600) in the state folder. False serves endpoints on the "
        "server's event loop.",
    ).tag(config=True)
    gateway_worker_loop = Enum(
        ["uvloop", "asyncio"], default_value="uvloop",
        help="The gateway worker's event loop: uvloop (where installed; bench/README.md has the figures) or asyncio's own.",
    ).tag(config=True)
    gateway_plain_requests = Bool(
        True,
        help="The gateway worker answers plain requests (small, whole, not streamed, nothing to wait for) in callbacks, "
        "without a task per request; False: every request by the full exchange (bench/README.md compares the two).",
    ).tag(config=True)
    gateway_port = Int(
        None, allow_none=True,
        help="Also serve endpoints on this loopback port (0: any free one) from the gateway worker, for same-host "
        "clients that skip the Jupyter hop; None: no port.",
    ).tag(config=True)
    payload_limit_bytes = Int(16 << 20, help="Largest request body the gateway accepts (embedding models set their own).").tag(
        config=True
    )
    metrics_interval_s = Float(2.0, help="Seconds between samples of host and deployment metrics.").tag(config=True)
    metrics_window = Int(1800, help="Samples kept per time series (ring buffer length).").tag(config=True)
    ray_address = Unicode(
        "auto",
        help="The Ray cluster of deployments with placement.target 'ray' (a deployment's placement.ray_address "
        "overrides it): 'auto' (the cluster this host belongs to, or RAY_ADDRESS), 'host:6379', 'ray://host:10001'.",
    ).tag(config=True)
    ray_namespace = Unicode("modeldeploy", help="Ray namespace of the replica actors.").tag(config=True)
    ray_reattach = Bool(
        True,
        help="Leave Ray deployments running when the Jupyter server stops, and re-attach them when it starts "
        "again; False stops them with the server.",
    ).tag(config=True)
    ray_runtime_env = Dict(
        {}, help="Ray runtime_env of the replica actors: how nodes get this package and its engines "
        "(pip, py_modules, a container image); empty: the nodes' own install.",
    ).tag(config=True)
    keep_request_log = Bool(
        True, help="Keep the request log (every request's time, key id, model, route, status, latency, tokens); "
        "False keeps none (per-key usage is still counted).",
    ).tag(config=True)
    endpoint_activity = Bool(
        True, help="Endpoint requests count as this server's activity (what JupyterHub's idle culler reads); False: "
        "only Jupyter's own use does. A request in flight always keeps the server active.",
    ).tag(config=True)
    endpoint_activity_check_s = Float(5.0, help="Seconds between updates of that activity.").tag(config=True)
    request_log_max_rows = Int(100_000, help="Requests the request log keeps (the oldest are dropped).").tag(config=True)
    usage_retention_days = Float(
        90.0, help="Days of per-key usage (per minute) kept in the activity file of the state folder."
    ).tag(config=True)

    share_service = Unicode(
        DEFAULT_SHARE_SERVICE,
        help="Name of the JupyterHub service that gives teammates their keys to deployments shared with them "
        "(jupyter_modeldeploy.hub_share); only that service may call the /hub-share routes.",
    ).tag(config=True)

    jupyter_ai_version = Enum(
        ["auto", "2", "3"],
        default_value="auto",
        help="Which jupyter-ai the registration writes for (POST .../jupyter-ai without ?version=): 'auto' (the "
        "major version of the jupyter-ai installed with this server, 3 when there is none), '2' or '3'.",
    ).tag(config=True)

    @default("state_dir")
    def _default_state_dir(self) -> str:
        return str(Path(jupyter_data_dir()) / "modeldeploy")

    def engine_settings(self) -> EngineSettings:
        vllm_python = self.vllm_python
        if vllm_python is None:
            try:
                from ..engines.vllm_install import find_vllm_python

                found = find_vllm_python()
                vllm_python = str(found) if found else None
            except ImportError:
                vllm_python = None
        return EngineSettings(
            llamacpp_server=self.llamacpp_server,
            llamacpp_engine=self.llamacpp_engine,
            llamacpp_python=self.llamacpp_python,
            vllm_python=vllm_python,
            embedding_python=self.embedding_python,
        )

    def initialize_settings(self) -> None:
        supervisor = Supervisor(
            Path(self.state_dir),
            self.engine_settings(),
            health_timeout_s=self.health_timeout_s,
            stop_grace_s=self.stop_grace_s,
            ray=RaySettings(address=self.ray_address, namespace=self.ray_namespace, reattach=self.ray_reattach,
                            runtime_env=dict(self.ray_runtime_env)),
        )
        supervisor.load()
        tokens = TokenRegistry(supervisor.store)
        supervisor.changes.connect(functools.partial(clean_up_after_delete, tokens))
        self._report_store(supervisor)
        gateway = Gateway(
            supervisor,
            tokens,
            GatewayConfig(
                upstream_timeout_s=self.upstream_timeout_s,
                default_payload_limit=self.payload_limit_bytes,
                wake=supervisor.ensure_ready,
                http_server=lambda: self.serverapp.http_server,
            ),
            worker=self._worker_settings() if self.gateway_worker else None,
        )
        self.supervisor = supervisor
        self.gateway = gateway
        self.activity = ServerActivity(self.settings, supervisor, gateway.settle, requests_count=self.endpoint_activity,
                                       every_s=self.endpoint_activity_check_s)
        self.writer = BatchWriter([tokens])
        self.metrics = None
        self.key_usage = None
        self.request_log = None
        try:
            from ..metrics.hub import MetricsHub

            self.metrics = MetricsHub(supervisor, interval_s=self.metrics_interval_s, window=self.metrics_window)
            gateway.config.observers.append(self.metrics.observe_request)
            self.key_usage = self._key_usage(gateway, self.metrics)
        except ImportError:  # metrics are optional at this layer
            self.metrics = None
        self.settings.update(
            {
                "modeldeploy_supervisor": supervisor,
                "modeldeploy_tokens": tokens,
                "modeldeploy_gateway": gateway,
                "modeldeploy_metrics": self.metrics,
                "modeldeploy_key_usage": self.key_usage,
                "modeldeploy_request_log": self.request_log,
                "modeldeploy_writer": self.writer,
                "modeldeploy_jupyter_ai_version": self.jupyter_ai_version,
                "modeldeploy_share_desk": ShareDesk(tokens),
                "modeldeploy_hub": HubContext.from_environment(self.share_service),
            }
        )
        self.log.info("modeldeploy: state in %s", self.state_dir)

    def _worker_settings(self) -> WorkerSettings:
        """The gateway worker's timeouts and limits, and its doors (the socket where its path fits)."""
        door = Path(self.state_dir) / "gateway.sock"
        if len(str(door)) > MAX_SOCKET_PATH:
            self.log.warning("modeldeploy: the state folder's path is too long for the gateway's Unix socket; "
                             "it is not opened")
            door = None
        return WorkerSettings(upstream_timeout_s=self.upstream_timeout_s, default_payload_limit=self.payload_limit_bytes,
                              door_socket=door, door_port=self.gateway_port, base_url=self.serverapp.base_url,
                              event_loop=self.gateway_worker_loop, plain_requests=self.gateway_plain_requests)

    def _key_usage(self, gateway: Gateway, hub: Any) -> Any:
        """Per-key usage (counted per request, kept in the activity file, in Prometheus; daily budgets
        resume from what the keys used today) and the request log, in the same file."""
        import time

        from ..metrics.activity_store import ActivityStore
        from ..metrics.keyusage import KeyUsage, KeyUsageCollector
        from ..metrics.requestlog import RequestLog

        store = ActivityStore(Path(self.state_dir) / "activity.sqlite")
        usage = KeyUsage(store, retention_days=self.usage_retention_days)
        gateway.config.observers.append(usage.observe)
        self.writer.sources.append(usage)
        if self.keep_request_log:
            self.request_log = RequestLog(store, max_rows=self.request_log_max_rows)
            gateway.config.observers.append(self.request_log.observe)
            self.writer.sources.append(self.request_log)
        now = time.time()
        for key_id, tokens in usage.tokens_today().items():
            gateway.quotas.seed_day(key_id, tokens, now)
        deployments = self.supervisor.deployments
        hub.registry.register(KeyUsageCollector(usage, lambda i: deployments[i].name if i in deployments else i))
        return usage

    def _report_store(self, supervisor: Supervisor) -> None:
        """Say in the server's log what the deployment store could not read (also in GET /status)."""
        report = supervisor.store.report()
        if report["recovered"]:
            self.log.error("modeldeploy: %s", report["recovered"]["reason"])
        if report["skipped"]:
            self.log.warning(
                "modeldeploy: %d stored row(s) could not be read and are left out (listed in GET /api/modeldeploy/status)",
                len(report["skipped"]),
            )

    def initialize_handlers(self) -> None:
        # ExtensionApp prepends the server's base URL to every pattern.
        prefix = "/api/modeldeploy"
        # The views' routes first: /validate there also checks the model files (handlers.py's only the fields).
        routes = [*validate_handlers(prefix), *view_handlers(prefix), *dashboard_handlers(prefix), *api_handlers(prefix),
                  *share_handlers(prefix), *jupyter_ai_handlers(prefix)]
        handlers: list[tuple[str, Any, dict[str, Any]] | tuple[str, Any]] = list(routes)
        if self.metrics is not None:
            from .metrics_handlers import metrics_handlers

            handlers += metrics_handlers(prefix)
        if self.key_usage is not None:
            from .activity_handlers import activity_handlers

            handlers += activity_handlers(prefix)
        self.handlers.extend(handlers)
        self._route_endpoints_first()

    def _route_endpoints_first(self) -> None:
        """Match the gateway's routes before any other handler of the server.

        Tornado tries each extension's handler list in turn, pattern by pattern: a request to an
        endpoint went through every route of JupyterLab, the other extensions and this REST API
        before reaching its own. Its own rule first makes that one regular expression, on the
        path every caller of a shared endpoint takes.
        """
        endpoints: list[tuple[str, Any, dict[str, Any]]] = []
        if self.metrics is not None:
            from .endpoint_metrics import ENDPOINT_METRICS_PATTERN, EndpointMetricsHandler

            endpoints.append((ENDPOINT_METRICS_PATTERN, EndpointMetricsHandler, {"gateway": self.gateway, "hub": self.metrics}))
        endpoints.append((ENDPOINT_PATTERN, EndpointHandler, {"gateway": self.gateway}))
        webapp = self.serverapp.web_app
        base_url = webapp.settings["base_url"]
        route_first(webapp, [(url_path_join(base_url, pattern), *rest) for pattern, *rest in endpoints])

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        await self.supervisor.start()
        self.gateway.start()  # the worker, in the background (endpoint requests wait for it)
        self.writer.start()
        self.activity.start()
        if self.metrics is not None:
            self.metrics.start()

    async def stop_extension(self) -> None:
        await self.gateway.synced()  # the gateway worker's last reports (key last-used times, usage) are kept too
        self.activity.stop()
        if self.metrics is not None:
            self.metrics.stop()
        await self.writer.stop()  # before the store closes
        await self.supervisor.shutdown()
        await self.gateway.close()
        if self.key_usage is not None:
            self.key_usage.store.close()


def route_first(webapp: web.Application, handlers: list[Any]) -> None:
    """Add `handlers` to a tornado application ahead of every handler it already has."""
    webapp.add_handlers(".*$", handlers)
    rules = webapp.default_router.rules
    rules.insert(0, rules.pop(-2))  # add_handlers puts its rule last but one, before the server's own
