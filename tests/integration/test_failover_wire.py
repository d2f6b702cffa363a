"""A replica that fails a request: sent to another when no byte of the answer came, a cut stream ended cleanly.

Two replicas of one deployment behind the gateway (on the server's loop, and in the gateway
worker): engines on Unix sockets that misbehave the way a dying replica does. One accepts the
connection and drops it before answering (its node going away mid-request); the other answers.
A third starts an event stream and breaks it off.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from jupyter_modeldeploy.engines import EngineAddress, routes
from jupyter_modeldeploy.supervisor.replicas import Replica, set_down, set_serving
from tests.support.gateway_harness import ENGINE_KEY, GatewayThread
from tests.support.polling import wait_until

CHAT = "/v1/chat/completions"
Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return await reader.readexactly(length)


DROPPED: list[bytes] = []  # the requests the dying replica took before dropping them


async def drops_before_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    DROPPED.append(await read_request(reader))
    writer.transport.abort()  # a reset, as when the engine's process dies with its node


ANSWERED: list[bytes] = []  # the requests the good replica answered, as it received them


async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            ANSWERED.append(await read_request(reader))
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        body = json.dumps({"choices": [{"message": {"content": "from the good replica"}}]}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        await writer.drain()


HUNG: list[bytes] = []  # the requests the silent replica took


async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    HUNG.append(await read_request(reader))
    await asyncio.sleep(3600)  # a node that stopped: the connection stays open, nothing comes, no reset


async def answers_once_then_hangs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    body = json.dumps({"choices": [{"message": {"content": "from the first replica"}}]}).encode()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(body), body))
    await writer.drain()
    HUNG.append(await read_request(reader))  # the next request on the kept connection: its node stopped
    await asyncio.sleep(3600)


async def cuts_its_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    event = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + b"%x\r\n%s\r\n" % (len(event), event))
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.transport.abort()  # the replica dies mid-stream


STREAMING: list[bytes] = []  # the requests the freezing replica began to answer


async def streams_then_freezes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    STREAMING.append(await read_request(reader))
    event = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + b"%x\r\n%s\r\n" % (len(event), event))
    await writer.drain()
    await asyncio.sleep(3600)  # its node froze mid-stream: nothing more comes, and no reset


def engine(gw: GatewayThread, path: Path, behaviour: Behaviour) -> EngineAddress:
    async def start() -> asyncio.AbstractServer:
        return await asyncio.start_unix_server(behaviour, path=str(path))

    gw.run(start())
    return EngineAddress(socket_path=str(path))


def two_replicas(gw: GatewayThread, first: EngineAddress, second: EngineAddress | None) -> tuple[object, str, list]:
    """A deployment whose first replica (serving longest: picked first) is `first`."""
    dep, key = gw.harness.add(routes.LLAMA_SERVER, first)
    addresses = [first] if second is None else [first, second]
    replicas = [Replica(id=f"md-r{i}", address=a, engine_key=ENGINE_KEY) for i, a in enumerate(addresses)]
    for i, replica in enumerate(replicas):
        set_serving(replica)
        replica.serving_since = 1000.0 + i

    def install() -> None:
        dep.replicas = replicas

    gw.call(install)
    return dep, key, replicas


def post(gw: GatewayThread, dep: object, key: str, body: dict) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.harness.port, timeout=15)
    try:
        conn.request("POST", f"/modeldeploy/endpoints/{dep.route}{CHAT}", json.dumps(body),  # type: ignore[attr-defined]
                     {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        answer = conn.getresponse()
        return answer.status, answer.read()  # a body cut without its end raises IncompleteRead here
    finally:
        conn.close()


def post_to_the_silent_replica(gw: GatewayThread, dep: object, key: str) -> tuple[threading.Thread,
                                                                                list[tuple[int, bytes]]]:
    """A caller posting in a thread of its own, returned once the silent replica holds its request."""
    HUNG.clear()
    answer: list[tuple[int, bytes]] = []
    caller = threading.Thread(target=lambda: answer.append(post(gw, dep, key, {"messages": [], "max_tokens": 4})))
    caller.start()
    assert wait_until(lambda: HUNG, timeout=10), "the silent replica was never sent the request: nothing was tested"
    return caller, answer


def test_a_request_dropped_before_any_answer_goes_to_the_other_replica(gw: GatewayThread, tmp_path: Path) -> None:
    dying = engine(gw, tmp_path / "dying.sock", drops_before_answering)
    good = engine(gw, tmp_path / "good.sock", answers)
    dep, key, replicas = two_replicas(gw, dying, good)
    DROPPED.clear()
    for _ in range(3):
        status, body = post(gw, dep, key, {"messages": [], "max_tokens": 4})
        assert status == 200, body[:300]
        assert b"from the good replica" in body
    assert DROPPED, "the dying replica was never picked: nothing was tested"
    records = gw.records()
    assert [r.status for r in records] == [200, 200, 200]
    assert {r.replica for r in records} == {replicas[1].id}


def test_a_request_waiting_on_a_replica_that_leaves_the_rotation_goes_to_another(gw: GatewayThread,
                                                                                 tmp_path: Path) -> None:
    """A node that stops without a reset: the supervisor takes its replica out of the rotation (its actor no
    longer answers), and the request waiting there for its answer's head is sent to the other replica
    (the gateway's upstream timeout here is 1.5 s: without this it would end in a 504)."""
    silent = engine(gw, tmp_path / "silent.sock", never_answers)
    good = engine(gw, tmp_path / "good.sock", answers)
    dep, key, replicas = two_replicas(gw, silent, good)
    caller, answer = post_to_the_silent_replica(gw, dep, key)
    gw.call(lambda: set_down(dep.replicas[0], "its actor does not answer"))  # type: ignore[attr-defined]
    caller.join(15)
    status, body = answer[0]
    assert status == 200, body[:300]
    assert b"from the good replica" in body
    assert [r.replica for r in gw.records()] == [replicas[1].id]


def test_a_request_on_a_kept_connection_to_a_replica_that_leaves_the_rotation_goes_to_another(
        gw: GatewayThread, tmp_path: Path) -> None:
    """The same on a kept engine connection, where the worker sends a small request plainly (`relay.plain`,
    in callbacks): it too is given up the moment its replica leaves the rotation."""
    first = engine(gw, tmp_path / "first.sock", answers_once_then_hangs)
    good = engine(gw, tmp_path / "good.sock", answers)
    dep, key, replicas = two_replicas(gw, first, good)
    assert post(gw, dep, key, {"messages": [], "max_tokens": 4})[0] == 200  # the first replica: its connection kept
    assert post(gw, dep, key, {"messages": [], "max_tokens": 4})[0] == 200  # the good one (they alternate)
    ANSWERED.clear()
    caller, answer = post_to_the_silent_replica(gw, dep, key)  # the first again, on its kept connection
    gw.call(lambda: set_down(dep.replicas[0], "its actor does not answer"))  # type: ignore[attr-defined]
    caller.join(15)
    status, body = answer[0]
    assert status == 200, body[:300]
    assert b"from the good replica" in body
    # The request went again whole: the body the silent replica was sent, not an empty one.
    assert ANSWERED == HUNG and json.loads(ANSWERED[0]) == {"messages": [], "max_tokens": 4}
    assert [r.replica for r in gw.records()] == [replicas[0].id, replicas[1].id, replicas[1].id]


def test_with_no_other_replica_the_drop_is_a_502(gw: GatewayThread, tmp_path: Path) -> None:
    dep, key, _ = two_replicas(gw, engine(gw, tmp_path / "dying.sock", drops_before_answering), None)
    status, body = post(gw, dep, key, {"messages": [], "max_tokens": 4})
    assert status == 502, body[:300]
    assert "closed the connection before answering" in json.loads(body)["error"]["message"]


def test_a_stream_cut_mid_answer_ends_with_an_error_event_and_a_clean_end(gw: GatewayThread, tmp_path: Path) -> None:
    cutting = engine(gw, tmp_path / "cut.sock", cuts_its_stream)
    good = engine(gw, tmp_path / "good.sock", answers)
    dep, key, _ = two_replicas(gw, cutting, good)
    status, body = post(gw, dep, key, {"messages": [], "max_tokens": 4, "stream": True})
    assert status == 200
    events = [e for e in body.decode().split("\n\n") if e.strip()]
    assert events[0].startswith("data: ") and json.loads(events[0][6:])["choices"]  # what came before the cut
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert "broke off the stream" in error["message"], error
    assert "[DONE]" not in body.decode()  # a cut stream does not pretend to have ended well
    # Not sent again: part of the answer had gone to the client.
    assert [(r.replica, r.status) for r in gw.records()] == [("md-r0", 502)]


def test_a_stream_whose_replica_is_lost_mid_answer_ends_then_not_when_the_engine_times_out(gw: GatewayThread,
                                                                                            tmp_path: Path) -> None:
    """A node that freezes mid-stream: once the supervisor finds the replica lost (its actor no longer answers:
    its engine's address is gone), the stream ends with its error event at once, not after the engine was silent
    for the gateway's upstream timeout."""
    freezing = engine(gw, tmp_path / "freezing.sock", streams_then_freezes)
    dep, key, _ = two_replicas(gw, freezing, engine(gw, tmp_path / "good.sock", answers))
    STREAMING.clear()
    answer: list[tuple[int, bytes]] = []
    caller = threading.Thread(target=lambda: answer.append(
        post(gw, dep, key, {"messages": [], "max_tokens": 4, "stream": True})))
    caller.start()
    assert wait_until(lambda: STREAMING, timeout=10), "the stream never began: nothing was tested"

    def lost() -> None:  # what the Ray run does when the replica's actor call fails
        replica = dep.replicas[0]  # type: ignore[attr-defined]
        set_down(replica, "its actor does not answer")
        replica.address = None

    gw.call(lost)
    caller.join(15)
    status, body = answer[0]
    assert status == 200
    error = json.loads([e for e in body.decode().split("\n\n") if e.strip()][-1].removeprefix("data: "))["error"]
    assert "the replica's engine went away (its actor does not answer)" in error["message"], error


def test_the_server_counts_the_requests_in_flight_on_each_replica_on_every_path(gw: GatewayThread,
                                                                              tmp_path: Path) -> None:
    """Removing a replica waits for its requests in flight by the server's count of them: where the worker sends
    the requests, its reports keep that count (without them it stayed 0 and a scale-down cut requests)."""
    silent = engine(gw, tmp_path / "silent.sock", never_answers)
    dep, key, _ = two_replicas(gw, silent, None)
    caller, answer = post_to_the_silent_replica(gw, dep, key)
    assert wait_until(lambda: gw.call(lambda: dep.replicas[0].in_flight) == 1, timeout=5)  # type: ignore[attr-defined]
    caller.join(15)
    assert answer and answer[0][0] == 504  # the upstream timeout of the harness (1.5 s)
    assert wait_until(lambda: gw.call(lambda: dep.replicas[0].in_flight) == 0, timeout=5)  # type: ignore[attr-defined]
