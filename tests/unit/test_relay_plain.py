"""The gateway worker's plain path (`relay.plain`), in process, over real sockets and a wire engine.

A plain request (small, read whole, nothing to wait for, a kept engine connection free) is answered in
the callbacks that read it and its answer: no task serves it. One whose answer turns out not to be plain
(a stream, a body still coming, an engine that lost the kept connection) is taken over by an exchange
midway, and its client sees the same answer as the exchange gives from the start. The differential
tests in tests/integration/test_plain_requests.py hold both paths to the same answers and records.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_modeldeploy.config import parse_config
from jupyter_modeldeploy.engines import EngineAddress, LaunchPlan
from jupyter_modeldeploy.engines import routes as route_tables
from jupyter_modeldeploy.gateway.core import GatewayConfig
from jupyter_modeldeploy.gateway.relay.connection import EndpointConnection
from jupyter_modeldeploy.gateway.relay.outbox import Outbox
from jupyter_modeldeploy.gateway.relay.protocol import Finished, Message, State
from jupyter_modeldeploy.gateway.relay.worker_gateway import WorkerGateway
from jupyter_modeldeploy.gateway.view import DeploymentView
from jupyter_modeldeploy.keys import hash_key
from jupyter_modeldeploy.supervisor import Status
from jupyter_modeldeploy.supervisor.replicas import Replica, set_serving
from tests.support.wire_engine import WireEngine

KEY = "sk-plain-test-key"
ENGINE_KEY = "engine-key-" + "y" * 20
BASE = "/modeldeploy/endpoints/plain"


@dataclass
class Worker:
    """A worker's gateway and door in this process, and what its connections did."""

    gateway: WorkerGateway
    outbox: Outbox
    door: str
    connections: list[EndpointConnection] = field(default_factory=list)
    reports: list[Message] = field(default_factory=list)
    served_plainly: int = 0  # requests a connection answered with no task serving them
    tasks: int = 0  # tasks connections started to serve requests


@asynccontextmanager
async def worker_in_process(tmp_path: Path, *, plain: bool = True) -> AsyncIterator[tuple[Worker, WireEngine]]:
    engine = await WireEngine(tmp_path / "engine.sock").start()
    address = EngineAddress(socket_path=str(engine.socket_path))
    reports: list[Message] = []
    outbox = Outbox(reports.extend)
    gateway = WorkerGateway(GatewayConfig(upstream_timeout_s=2, plain_requests=plain), outbox, settle=lambda: None)
    replica = Replica(id="local", address=address, engine_key=ENGINE_KEY)
    set_serving(replica)
    view = DeploymentView(
        id="d1", name="plain", route="plain", status=Status.ACTIVE,
        config=parse_config({"kind": "llamacpp", "name": "plain", "model": "m.gguf", "route": "plain"}),
        plan=LaunchPlan(argv=["engine"], models=["m"], routes=route_tables.LLAMA_SERVER, listen=address),
        models=["m"], replicas=[replica], api_key_hash=hash_key(KEY), engine_key=ENGINE_KEY)
    gateway.apply(State(1, (view,), full=True))
    worker = Worker(gateway, outbox, str(tmp_path / "door.sock"), reports=reports)

    def connection() -> EndpointConnection:
        made = Counting(gateway, "socket", worker=worker)
        worker.connections.append(made)
        return made

    server = await asyncio.get_running_loop().create_unix_server(connection, worker.door)
    try:
        yield worker, engine
    finally:
        server.close()
        await gateway.close()
        await engine.stop()


class Counting(EndpointConnection):
    """A worker connection that notes which way each request was served."""

    def __init__(self, *args: object, worker: Worker):
        super().__init__(*args)  # type: ignore[arg-type]
        self._worker = worker

    def _dispatch(self) -> None:
        super()._dispatch()
        if self._plain is not None:
            self._worker.served_plainly += 1
        else:
            self._worker.tasks += 1


def chat(nonce: str, **headers: str) -> bytes:
    body = json.dumps({"nonce": nonce}).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (f"POST {BASE}/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One answer off the wire: status, headers (lower-case names), body (chunked framing removed)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, headers, body
        body += chunk[:-2]


async def warmed(worker: Worker) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the worker's door whose first request was answered (so an engine connection is kept)."""
    reader, writer = await asyncio.open_unix_connection(worker.door)
    writer.write(chat("warm"))
    assert (await answer(reader))[0] == 200
    return reader, writer


def records(worker: Worker) -> list[Finished]:
    """The worker's reports of requests ended, as the server would read them (the batch sent first)."""
    worker.outbox.flush()
    return [r for r in worker.reports if isinstance(r, Finished) and r.record is not None]


def test_a_plain_request_is_answered_without_a_task(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with worker_in_process(tmp_path) as (worker, engine):
            reader, writer = await asyncio.open_unix_connection(worker.door)
            for nonce in ("first", "second", "third"):
                writer.write(chat(nonce))
                status, headers, body = await answer(reader)
                assert status == 200 and json.loads(body)["nonce"] == nonce
                assert headers["content-type"] == "application/json"
            # The first went by an exchange (no engine connection was kept yet); the next two were plain.
            assert (worker.tasks, worker.served_plainly) == (1, 2)
            done = records(worker)
            assert [f.record.status for f in done] == [200, 200, 200]
            assert all(f.record.usage is not None and f.record.usage.total == 8 for f in done)
            assert worker.gateway.deployments["d1"].in_flight == 0
            # What reached the engine: the private key, never the caller's.
            assert all(r.headers["authorization"] == f"Bearer {ENGINE_KEY}" for r in engine.received)
            writer.close()

    asyncio.run(scenario())


def test_the_plain_path_can_be_turned_off(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with worker_in_process(tmp_path, plain=False) as (worker, _engine):
            reader, writer = await asyncio.open_unix_connection(worker.door)
            for nonce in ("a", "b"):
                writer.write(chat(nonce))
                assert (await answer(reader))[0] == 200
            assert (worker.tasks, worker.served_plainly) == (2, 0)
            writer.close()

    asyncio.run(scenario())


def test_an_answer_that_is_not_plain_is_taken_over_midway(tmp_path: Path) -> None:
    """Each of these was sent plainly (an engine connection was kept), and its answer was not whole: an
    exchange finishes it, from the engine's head on, as it would have from the start."""

    async def scenario() -> None:
        async with worker_in_process(tmp_path) as (worker, _engine):
            reader, writer = await warmed(worker)
            writer.write(chat("s", **{"X-Fake-Mode": "sse", "X-Fake-Events": "3"}))
            status, headers, body = await answer(reader)
            assert status == 200 and headers["content-type"] == "text/event-stream"
            assert body.count(b"data: ") == 3 and b'"completion_tokens": 3' in body
            writer.write(chat("b", **{"X-Fake-Mode": "big", "X-Fake-Size": "300000"}))
            status, _headers, body = await answer(reader)
            assert status == 200 and len(body) == 300000 and json.loads(body)["nonce"] == "b"
            writer.write(chat("d", **{"X-Fake-Mode": "drop-next"}))
            assert (await answer(reader))[0] == 200
            writer.write(chat("after-drop"))  # the kept connection is lost unanswered: sent again on a new one
            status, _headers, body = await answer(reader)
            assert status == 200 and json.loads(body)["nonce"] == "after-drop"
            assert worker.served_plainly >= 4  # sent plainly, then adopted: sse, big, drop-next's next
            assert [f.record.status for f in records(worker)] == [200] * 5
            assert records(worker)[1].record.streamed
            assert worker.gateway.deployments["d1"].in_flight == 0
            writer.close()

    asyncio.run(scenario())


def test_a_client_gone_before_its_plain_answer_gives_its_slot_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with worker_in_process(tmp_path) as (worker, _engine):
            _reader, writer = await warmed(worker)
            writer.write(chat("gone", **{"X-Fake-Mode": "slow", "X-Fake-Delay": "0.3"}))
            await asyncio.sleep(0.1)
            dep = worker.gateway.deployments["d1"]
            assert dep.in_flight == 1 and worker.served_plainly == 1
            writer.transport.abort()
            for _ in range(100):
                await asyncio.sleep(0.02)
                if dep.in_flight == 0 and len(records(worker)) == 2:
                    break
            assert dep.in_flight == 0
            assert len(records(worker)) == 2

    asyncio.run(scenario())
