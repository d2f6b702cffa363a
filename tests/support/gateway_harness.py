"""The gateway in-process on a tornado server of its own, in front of any engine, for fast wire tests.

A deployment is registered as serving, pointing at the given engine address, with the launch
plan a real engine kind would declare (its route table, limits, usage policy), so the
gateway's decisions are exactly those it makes for that kind.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from tornado.httpserver import HTTPServer
from tornado.web import Application, RequestHandler

from jupyter_modeldeploy.config import parse_config
from jupyter_modeldeploy.engines import EngineAddress, LaunchPlan, ModelLimits
from jupyter_modeldeploy.engines.routes import RouteTable
from jupyter_modeldeploy.gateway.core import GatewayConfig
from jupyter_modeldeploy.gateway.proxy import ENDPOINT_PATTERN, EndpointHandler
from jupyter_modeldeploy.gateway.records import RequestRecord
from jupyter_modeldeploy.gateway.relay.plane import WorkerSettings
from jupyter_modeldeploy.gateway.server_gateway import Gateway
from jupyter_modeldeploy.gateway.tokens import TokenRegistry
from jupyter_modeldeploy.keys import hash_key
from jupyter_modeldeploy.supervisor import Deployment, Status, Supervisor
from jupyter_modeldeploy.supervisor.replicas import Replica, set_serving

ENGINE_KEY = "engine-private-key-" + "x" * 16


class ExternalEngine:
    """The handle of an engine the test runs itself (the supervisor did not start it)."""

    pid = None
    returncode = None
    notes: list[str] = []

    async def lines(self):  # type: ignore[no-untyped-def]
        return
        yield

    async def wait(self) -> int:
        return 0

    async def terminate(self, grace_s: float) -> None:
        return None


class ServerOwnHandler(RequestHandler):
    """A route of the server's own (as Jupyter's REST API and Lab are): answered by the server, never the worker."""

    def get(self) -> None:
        self.finish({"served_by": "server", "pid": os.getpid()})


@dataclass
class Harness:
    """A running gateway: its port, supervisor, tokens and the records it produced."""

    port: int
    supervisor: Supervisor
    tokens: TokenRegistry
    gateway: Gateway
    server: HTTPServer
    records: list[RequestRecord] = field(default_factory=list)

    def url(self, route: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/modeldeploy/endpoints/{route}{path}"

    def add(
        self, routes: RouteTable, address: EngineAddress, *, models: list[str] | None = None, key: str | None = None,
        limits: dict[str, ModelLimits] | None = None, max_concurrent: int | None = None, stream_usage: bool = False,
        cors: list[str] | None = None, api_key_quotas: dict[str, int] | None = None,
        options: dict[str, object] | None = None,
    ) -> tuple[Deployment, str]:
        """A serving deployment in front of `address` (`options`: more of its config); returns it and its fixed key."""
        key = key or "key-" + secrets.token_hex(8)
        name = "d-" + secrets.token_hex(3)
        data: dict[str, object] = {"kind": "llamacpp", "name": name, "model": "m.gguf", "route": name, **(options or {})}
        if cors is not None:
            data["cors_allow_origins"] = cors
        if api_key_quotas is not None:
            data["api_key_quotas"] = api_key_quotas
        config = parse_config(data)
        dep = self.supervisor._new_deployment(secrets.token_hex(4), config, name, api_key_hash=hash_key(key))
        dep.plan = LaunchPlan(
            argv=["engine"], models=models or ["m"], routes=routes, listen=address, limits=limits or {},
            max_concurrent_requests=max_concurrent, stream_usage=stream_usage,
        )
        dep.listen = address
        dep.process = ExternalEngine()
        dep.engine_key = ENGINE_KEY
        dep.status = Status.ACTIVE
        dep.replicas = [Replica(id="local", address=address, engine_key=ENGINE_KEY)]
        set_serving(dep.replicas[0])
        self.supervisor.deployments[dep.id] = dep
        self.gateway.publish()  # registered by hand, without the supervisor's signal
        return dep, key

    async def close(self) -> None:
        self.server.stop()
        await self.gateway.close()
        await self.supervisor.engine_http.close()
        self.supervisor.store.close()


async def start_gateway(state_dir: Path, *, upstream_timeout_s: float = 10.0, worker: bool = False,
                        plain: bool = True) -> Harness:
    """A gateway on a free loopback port (no Jupyter: the same handler the extension mounts).

    `worker`: endpoint connections are handed to the gateway worker process, as in the extension (its
    Unix socket door in the state folder); `plain`: the worker answers plain requests in callbacks."""
    supervisor = Supervisor(state_dir)
    tokens = TokenRegistry(supervisor.store)
    records: list[RequestRecord] = []
    servers: list[HTTPServer] = []
    settings = WorkerSettings(upstream_timeout_s=upstream_timeout_s, door_socket=state_dir / "gateway.sock",
                              plain_requests=plain)
    gateway = Gateway(supervisor, tokens, GatewayConfig(upstream_timeout_s=upstream_timeout_s,
                                                        observers=[records.append], http_server=lambda: servers[0]),
                      worker=settings if worker else None)
    app = Application([(ENDPOINT_PATTERN, EndpointHandler, {"gateway": gateway}), (r"/api/other", ServerOwnHandler)])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    server = HTTPServer(app, max_body_size=256 << 20)
    server.add_sockets([sock])
    servers.append(server)
    if worker:
        gateway.start()
        assert gateway.plane is not None and await gateway.plane.start(), "the gateway worker did not start"
    return Harness(sock.getsockname()[1], supervisor, tokens, gateway, server, records)


class GatewayThread:
    """The harness and a wire engine on an event loop of their own thread, so tests can use
    plain blocking sockets (and hypothesis) against them."""

    def __init__(self, state_dir: Path, *, upstream_timeout_s: float = 10.0, worker: bool = False, plain: bool = True):
        import asyncio
        import threading

        from tests.support.wire_engine import WireEngine

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def setup() -> tuple[Harness, WireEngine]:
            harness = await start_gateway(state_dir, upstream_timeout_s=upstream_timeout_s, worker=worker, plain=plain)
            engine = await WireEngine(state_dir / "engine.sock").start()
            return harness, engine

        self.worker = worker
        self.harness, self.engine = self.run(setup())
        self.address = EngineAddress(socket_path=str(self.engine.socket_path))

    def run(self, coro):  # type: ignore[no-untyped-def]
        """Run a coroutine on the gateway's loop and return its result."""
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)

    def call(self, fn):  # type: ignore[no-untyped-def]
        """Run a plain function on the gateway's loop (where the server's state lives) and return its result.

        As a REST handler does: the worker's reports are taken first, and what `fn` changed is published
        to the worker before this returns."""

        async def on_the_loop():  # type: ignore[no-untyped-def]
            gateway = self.harness.gateway
            await gateway.synced()
            try:
                return fn()
            finally:
                gateway.publish()

        return self.run(on_the_loop())

    def dep_in_flight(self, dep: Deployment) -> int:
        """A deployment's requests in flight, as the gateway counts them (the worker's, where it serves)."""
        return self.call(lambda: dep.in_flight)

    def records(self) -> list[RequestRecord]:
        """The records of the requests whose answers ended so far."""
        return self.call(lambda: list(self.harness.records))

    def close(self) -> None:
        async def teardown() -> None:
            await self.harness.close()
            await self.engine.stop()

        self.run(teardown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
