"""Connections the relay worker holds under a lease: it serves their plain requests, counted as the
server counts its own, and gives back everything else, which the server answers as before.

Every wire test also runs through the worker, where each connection's requests after the first
are served under its lease; these are the lease's own cases: what it admits, what ends it, what
is counted, and what the server takes back.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_modeldeploy.engines.routes import LLAMA_SERVER
from jupyter_modeldeploy.gateway.lease_grants import LeaseGrants
from jupyter_modeldeploy.supervisor import Status
from jupyter_modeldeploy.supervisor.tokens import Quotas
from tests.support.gateway_harness import GatewayThread
from tests.support.polling import wait_until
from tests.support.raw_http import RawConnection, RawResponse

CHAT = "/v1/chat/completions"


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[GatewayThread]:
    thread = GatewayThread(tmp_path, upstream_timeout_s=5, stream_relay=True)
    yield thread
    thread.close()


def leases(gw: GatewayThread) -> LeaseGrants:
    grants = gw.harness.gateway.leases
    assert grants is not None
    return grants


def chat(conn: RawConnection, base: str, key: str, nonce: str, **headers: str) -> RawResponse:
    conn.request("POST", base + CHAT, {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers},
                 json.dumps({"nonce": nonce}).encode())
    answer = conn.final_response()
    assert answer is not None
    return answer


def held_after_first(gw: GatewayThread, conn: RawConnection, base: str, key: str) -> None:
    """Send a first request: the server admits it and hands the connection over with a lease."""
    assert chat(conn, base, key, "first").json()["nonce"] == "first"
    assert wait_until(lambda: leases(gw).held == 1)


def test_the_next_requests_are_served_by_the_worker_and_counted(gw: GatewayThread) -> None:
    dep, key = gw.harness.add(LLAMA_SERVER, gw.address)
    base = f"/modeldeploy/endpoints/{dep.route}"
    relay = gw.harness.gateway.relay
    assert relay is not None
    with RawConnection(gw.harness.port) as conn:
        held_after_first(gw, conn, base, key)
        for n in range(5):
            answer = chat(conn, base, key, f"n{n}")
            assert answer.status == 200 and answer.json()["nonce"] == f"n{n}"
        conn.request("POST", base + CHAT, {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                                           "X-Fake-Mode": "sse", "X-Fake-Events": "4"},
                     json.dumps({"nonce": "s", "stream": True}).encode())
        streamed = conn.final_response()
        assert streamed is not None and streamed.status == 200 and streamed.body.count(b"data: ") == 4
    assert relay.handed_over == 1  # only the first request came through the server
    gw.call(gw.harness.gateway.settled)  # what a reader of usage does first: no waiting
    records = gw.harness.records
    assert len(records) == 7 and leases(gw).served == 6
    assert {r.key_id for r in records} == {"api-key"} and {r.path for r in records} == {CHAT}
    assert [r.usage.total if r.usage else None for r in records] == [8] * 6 + [2 + 4]
    assert records[-1].streamed and records[-1].first_chunk_s is not None
    # Each engine request carried the engine's key, never the caller's.
    assert all(r.headers.get("authorization") != f"Bearer {key}" for r in gw.engine.received)
    assert wait_until(lambda: dep.in_flight == 0)


def test_a_request_the_lease_was_not_made_for_goes_back_to_the_server(gw: GatewayThread) -> None:
    dep, key = gw.harness.add(LLAMA_SERVER, gw.address)
    other_key, _ = gw.harness.tokens.create(deployment_id=dep.id)
    base = f"/modeldeploy/endpoints/{dep.route}"
    with RawConnection(gw.harness.port) as conn:
        held_after_first(gw, conn, base, key)
        # A wrong key: the server refuses it, with its own 401 (no body: the connection stays open).
        conn.request("GET", base + "/v1/models", {"Authorization": "Bearer sk-wrong"})
        refused = conn.final_response("GET")
        assert refused is not None and refused.status == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        assert leases(gw).held == 0
        # Another valid key on the same connection: admitted by the server, and held again under its own lease.
        assert chat(conn, base, other_key, "other").status == 200
        assert wait_until(lambda: leases(gw).held == 1)
        # A path outside the allow-list, and one the server must normalise: its answers, not the worker's.
        conn.request("GET", base + "/slots", {"Authorization": f"Bearer {other_key}"})
        assert (answer := conn.final_response("GET")) is not None and answer.status == 404
        conn.request("GET", base + "/v1/models%2F", {"Authorization": f"Bearer {other_key}"})
        assert (answer := conn.final_response("GET")) is not None and answer.status == 400
    assert not any(r.target.startswith("/slots") for r in gw.engine.received)


def test_revoking_the_key_ends_the_lease_at_once(gw: GatewayThread) -> None:
    dep, _ = gw.harness.add(LLAMA_SERVER, gw.address)
    key, info = gw.harness.tokens.create(deployment_id=dep.id)
    base = f"/modeldeploy/endpoints/{dep.route}"
    with RawConnection(gw.harness.port) as conn:
        held_after_first(gw, conn, base, key)
        assert chat(conn, base, key, "served").status == 200
        gw.call(lambda: gw.harness.tokens.revoke(info.id))
        conn.request("POST", base + CHAT, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                     b'{"nonce": "after"}')
        refused = conn.final_response()
        assert refused is not None and refused.status == 401
    assert not any(b"after" in r.body for r in gw.engine.received)


def test_a_deployment_that_stops_serving_ends_the_lease(gw: GatewayThread) -> None:
    dep, key = gw.harness.add(LLAMA_SERVER, gw.address)
    base = f"/modeldeploy/endpoints/{dep.route}"
    with RawConnection(gw.harness.port) as conn:
        held_after_first(gw, conn, base, key)

        def unhealthy() -> None:
            dep.status = Status.UNHEALTHY
            gw.harness.supervisor.on_change(dep)  # type: ignore[misc]

        gw.call(unhealthy)
        answer = chat(conn, base, key, "late")
        assert answer.status == 503 and "health" in answer.json()["error"]["message"]


def test_keys_with_quotas_are_never_leased(gw: GatewayThread) -> None:
    dep, _ = gw.harness.add(LLAMA_SERVER, gw.address)
    key, _ = gw.harness.tokens.create(deployment_id=dep.id, quotas=Quotas(max_in_flight=5))
    base = f"/modeldeploy/endpoints/{dep.route}"
    with RawConnection(gw.harness.port) as conn:
        for n in range(3):
            assert chat(conn, base, key, f"q{n}").status == 200
    assert leases(gw).held == 0 and leases(gw).served == 0


def test_pipelined_requests_are_answered_in_order(gw: GatewayThread) -> None:
    dep, key = gw.harness.add(LLAMA_SERVER, gw.address)
    base = f"/modeldeploy/endpoints/{dep.route}"
    with RawConnection(gw.harness.port) as conn:
        held_after_first(gw, conn, base, key)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        wire = b""
        for n in range(3):
            body = json.dumps({"nonce": f"p{n}"}).encode()
            head = f"POST {base}{CHAT} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            wire += head.encode() + body
        conn.send(wire)
        nonces = []
        for _ in range(3):
            answer = conn.final_response()
            assert answer is not None and answer.status == 200
            nonces.append(answer.json()["nonce"])
        assert nonces == ["p0", "p1", "p2"]


def test_connection_close_and_an_unreachable_engine(gw: GatewayThread, tmp_path: Path) -> None:
    dep, key = gw.harness.add(LLAMA_SERVER, gw.address)
    base = f"/modeldeploy/endpoints/{dep.route}"
    with RawConnection(gw.harness.port) as conn:
        held_after_first(gw, conn, base, key)
        answer = chat(conn, base, key, "bye", Connection="close")
        assert answer.status == 200 and answer.header("Connection") == "close"
        conn.sock.settimeout(5)
        assert conn.sock.recv(1) == b""  # closed, by both the worker and the server
    assert wait_until(lambda: leases(gw).held == 0)
    with RawConnection(gw.harness.port) as conn:
        held_after_first(gw, conn, base, key)
        assert chat(conn, base, key, "last", **{"X-Fake-Mode": "close-after"}).status == 200
        time.sleep(0.3)  # the engine closed its idle connection: the next request must connect anew
        os.rename(gw.engine.socket_path, tmp_path / "moved.sock")  # and cannot
        try:
            answer = chat(conn, base, key, "nowhere")
        finally:
            os.rename(tmp_path / "moved.sock", gw.engine.socket_path)
        assert answer.status == 502 and answer.json()["error"]["type"] == "upstream_error"
        # The server took the connection back and serves it.
        assert chat(conn, base, key, "back").status == 200


def test_the_worker_dying_closes_the_connections_it_held(gw: GatewayThread) -> None:
    dep, key = gw.harness.add(LLAMA_SERVER, gw.address)
    base = f"/modeldeploy/endpoints/{dep.route}"
    relay = gw.harness.gateway.relay
    assert relay is not None and relay._process is not None
    with RawConnection(gw.harness.port) as conn:
        held_after_first(gw, conn, base, key)
        os.kill(relay._process.pid, signal.SIGKILL)
        conn.sock.settimeout(5)
        assert conn.sock.recv(1) == b""
    assert wait_until(lambda: leases(gw).held == 0)
    assert wait_until(lambda: gw.run(relay.start()))
    with RawConnection(gw.harness.port) as conn:
        assert chat(conn, base, key, "again").status == 200


def test_a_connection_given_back_at_once_is_served(gw: GatewayThread) -> None:
    """The worker may give a connection back before the handler that handed it over has run again:
    the server holds it from the moment the worker says it keeps it (a race, so many tries)."""
    dep, key = gw.harness.add(LLAMA_SERVER, gw.address)
    base = f"/modeldeploy/endpoints/{dep.route}"
    body = json.dumps({"nonce": "x"}).encode()
    first = (f"POST {base}{CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
             f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    refused = f"GET {base}/slots HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    for _ in range(40):
        with RawConnection(gw.harness.port, timeout=5) as conn:
            conn.send(first)
            assert (answer := conn.final_response()) is not None and answer.status == 200
            conn.send(refused)  # at once: the worker peeks at it while the server may not have run on yet
            assert (answer := conn.final_response("GET")) is not None and answer.status == 404
