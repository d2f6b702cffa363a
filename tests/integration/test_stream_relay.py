"""Streamed answers through the relay worker process: whole, counted, and the connection back in the server's hands.

The wire tests run every defect both on the gateway's loop and through the worker; these are the
worker's own cases: the hand-over and take-back of one keep-alive connection, `Connection:
close`, a client that hangs up while the engine is silent, and a worker that dies mid-stream.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_modeldeploy.engines.routes import LLAMA_SERVER
from tests.support.gateway_harness import GatewayThread
from tests.support.polling import wait_until
from tests.support.raw_http import RawConnection

CHAT = "/v1/chat/completions"


@pytest.fixture
def relay_gw(tmp_path: Path) -> Iterator[GatewayThread]:
    thread = GatewayThread(tmp_path, upstream_timeout_s=5, stream_relay=True)
    yield thread
    thread.close()


def sse_headers(key: str, events: int, gap_s: float = 0.01, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "X-Fake-Mode": "sse",
            "X-Fake-Events": str(events), "X-Fake-Gap": str(gap_s), **extra}


def test_a_stream_goes_through_the_worker_and_the_connection_serves_the_next_request(relay_gw: GatewayThread) -> None:
    dep, key = relay_gw.harness.add(LLAMA_SERVER, relay_gw.address)
    base = f"/modeldeploy/endpoints/{dep.route}"
    relay = relay_gw.harness.gateway.relay
    assert relay is not None
    with RawConnection(relay_gw.harness.port) as conn:
        conn.request("POST", base + CHAT, sse_headers(key, 7), json.dumps({"nonce": "s1", "stream": True}).encode())
        answer = conn.final_response()
        assert answer is not None and answer.status == 200
        assert answer.header("Transfer-Encoding") == "chunked"
        events = [json.loads(e[6:]) for e in answer.body.split(b"\n\n") if e]
        assert [e["choices"][0]["delta"]["content"] for e in events] == [f"t{i} " for i in range(7)]
        assert relay.handed_over == 1
        # The same connection, now a plain request: the server itself reads and answers it.
        conn.request("POST", base + CHAT, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                     json.dumps({"nonce": "plain"}).encode())
        plain = conn.final_response()
        assert plain is not None and plain.status == 200 and plain.json()["nonce"] == "plain"
        # And a second stream on it goes to the worker again.
        conn.request("POST", base + CHAT, sse_headers(key, 3), json.dumps({"nonce": "s2", "stream": True}).encode())
        again = conn.final_response()
        assert again is not None and again.status == 200 and b'"s2"' in again.body
    assert relay.handed_over == 2
    assert wait_until(lambda: len(relay_gw.harness.records) == 3)
    streamed = [r for r in relay_gw.harness.records if r.streamed]
    assert [(r.usage.prompt_tokens, r.usage.completion_tokens) for r in streamed if r.usage] == [(2, 7), (2, 3)]
    assert all(r.first_chunk_s is not None and r.status == 200 for r in streamed)
    assert dep.in_flight == 0


def test_a_stream_is_counted_before_its_client_has_the_end(relay_gw: GatewayThread) -> None:
    """A client that asks for its usage, or sends its next request under an in-flight quota, the
    moment its stream ended must find that stream counted: as on the loop, not a moment later."""
    dep, key = relay_gw.harness.add(LLAMA_SERVER, relay_gw.address)
    with RawConnection(relay_gw.harness.port) as conn:
        for n in range(1, 13):
            conn.request("POST", f"/modeldeploy/endpoints/{dep.route}{CHAT}", sse_headers(key, 2, gap_s=0),
                         json.dumps({"stream": True}).encode())
            answer = conn.final_response()
            assert answer is not None and answer.status == 200
            assert len(relay_gw.harness.records) == n  # no waiting: it was recorded before the end was written
            assert dep.in_flight == 0
    assert relay_gw.harness.gateway.relay is not None and relay_gw.harness.gateway.relay.handed_over == 12


def test_connection_close_is_honoured(relay_gw: GatewayThread) -> None:
    dep, key = relay_gw.harness.add(LLAMA_SERVER, relay_gw.address)
    with RawConnection(relay_gw.harness.port) as conn:
        conn.request("POST", f"/modeldeploy/endpoints/{dep.route}{CHAT}", sse_headers(key, 2, Connection="close"),
                     json.dumps({"nonce": "c", "stream": True}).encode())
        answer = conn.final_response()
        assert answer is not None and answer.status == 200 and answer.header("Connection") == "close"
        conn.sock.settimeout(3)
        assert conn.sock.recv(1) == b"", "the connection stays open after Connection: close"


def test_a_client_hanging_up_while_the_engine_is_silent_ends_the_request(relay_gw: GatewayThread) -> None:
    dep, key = relay_gw.harness.add(LLAMA_SERVER, relay_gw.address)
    conn = RawConnection(relay_gw.harness.port)
    conn.request("POST", f"/modeldeploy/endpoints/{dep.route}{CHAT}", sse_headers(key, 4, gap_s=4.0),
                 json.dumps({"nonce": "gone", "stream": True}).encode())
    assert conn._read_until(b"\n\n") is not None  # the head and the first event
    assert dep.in_flight == 1
    conn.close()
    # The engine sends nothing for 4 s; the worker notices the hang-up by itself and ends the request.
    assert wait_until(lambda: dep.in_flight == 0, timeout=2.0)
    assert wait_until(lambda: bool(relay_gw.harness.records))
    assert relay_gw.harness.records[-1].status == 200


def test_a_worker_that_dies_cuts_its_streams_only_and_streams_go_on(relay_gw: GatewayThread) -> None:
    dep, key = relay_gw.harness.add(LLAMA_SERVER, relay_gw.address)
    relay = relay_gw.harness.gateway.relay
    assert relay is not None and relay._process is not None
    base = f"/modeldeploy/endpoints/{dep.route}"
    conn = RawConnection(relay_gw.harness.port)
    conn.request("POST", base + CHAT, sse_headers(key, 50, gap_s=0.05), json.dumps({"nonce": "cut", "stream": True}).encode())
    assert conn._read_until(b"\n\n") is not None
    os.kill(relay._process.pid, signal.SIGKILL)
    conn.sock.settimeout(5)
    received = b""
    while chunk := conn.sock.recv(65536):  # a timeout here: the cut connection was left open
        received += chunk
    assert b"\r\n0\r\n\r\n" not in received, "a cut stream must not end as if complete"
    conn.close()
    assert wait_until(lambda: dep.in_flight == 0)
    # The next stream is answered (on the server's loop until the worker is back).
    with RawConnection(relay_gw.harness.port) as b:
        b.request("POST", base + CHAT, sse_headers(key, 3), json.dumps({"nonce": "after", "stream": True}).encode())
        after = b.final_response()
        assert after is not None and after.status == 200 and b'"after"' in after.body
