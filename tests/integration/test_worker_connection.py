"""The gateway worker's own HTTP/1.1 connections (`relay.connection`), reached through its Unix socket door.

Connections the Jupyter server hands over arrive after tornado has read their first request's head,
and the wire tests cover them; on the door the worker's llhttp framing reads every byte itself: bytes
that are not a request, a head past the limit, HTTP/1.0, chunked bodies, pipelining and paths that are
not endpoints each get a clear answer and never a hung or mixed-up connection.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_modeldeploy.engines import routes
from tests.support.gateway_harness import GatewayThread
from tests.support.raw_http import RawConnection

CHAT = "/v1/chat/completions"


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[GatewayThread]:
    thread = GatewayThread(tmp_path, upstream_timeout_s=1.5, worker=True)
    yield thread
    thread.close()


class Door:
    """A deployment behind the gateway, and requests to it through the worker's Unix socket."""

    def __init__(self, gw: GatewayThread, path: Path):
        dep, self.key = gw.harness.add(routes.LLAMA_SERVER, gw.address)
        self.base = f"/modeldeploy/endpoints/{dep.route}"
        self.path = str(path)

    def chat(self, nonce: str, version: str = "HTTP/1.1", extra: str = "") -> bytes:
        body = json.dumps({"nonce": nonce}).encode()
        return (f"POST {self.base}{CHAT} {version}\r\nHost: x\r\nAuthorization: Bearer {self.key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


@pytest.fixture
def door(gw: GatewayThread, tmp_path: Path) -> Door:
    path = tmp_path / "gateway.sock"  # the harness's state folder is the test's
    assert path.exists(), "the worker's door is not open"
    return Door(gw, path)


def test_pipelined_requests_on_the_door_get_their_own_answers_in_order(door: Door) -> None:
    nonces = [secrets.token_hex(4) for _ in range(5)]
    with RawConnection(door.path) as conn:
        conn.send(b"".join(door.chat(n) for n in nonces))
        for n in nonces:
            answer = conn.final_response()
            assert answer is not None and answer.status == 200, answer
            assert answer.json()["nonce"] == n


def test_bytes_that_are_not_http_get_400_json_after_the_answer_before_them(door: Door) -> None:
    with RawConnection(door.path) as conn:
        conn.send(door.chat("first") + b"\x00\x01 this is not HTTP\r\n\r\n")
        first = conn.final_response()
        assert first is not None and first.status == 200 and first.json()["nonce"] == "first"
        bad = conn.final_response()
        assert bad is not None and bad.status == 400, bad
        assert "malformed" in bad.json()["error"]["message"]
        assert bad.header("Connection") == "close"
        assert conn.final_response() is None  # the connection ended


def test_a_head_past_64_kib_gets_431(door: Door) -> None:
    with RawConnection(door.path) as conn:
        conn.send(f"GET {door.base}/v1/models HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 70_000}\r\n\r\n".encode())
        answer = conn.final_response()
        assert answer is not None and answer.status == 431, answer
        assert answer.json()["error"]["code"] == 431


def test_a_path_outside_the_endpoints_gets_a_json_404_on_the_door(door: Door) -> None:
    with RawConnection(door.path) as conn:
        conn.send(b"GET /api/contents HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = conn.final_response()
        assert answer is not None and answer.status == 404
        assert "not an endpoint" in answer.json()["error"]["message"]


def test_http_10_is_answered_and_the_connection_ends(door: Door) -> None:
    with RawConnection(door.path) as conn:
        conn.send(door.chat("old", version="HTTP/1.0"))
        answer = conn.final_response()
        assert answer is not None and answer.status == 200 and answer.json()["nonce"] == "old"
        assert conn.final_response() is None


def test_a_chunked_request_body_reaches_the_engine_whole(door: Door) -> None:
    body = json.dumps({"nonce": "chunked"}).encode()
    half = len(body) // 2
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:])
    with RawConnection(door.path) as conn:
        conn.send(f"POST {door.base}{CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {door.key}\r\n"
                  "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + chunks)
        answer = conn.final_response()
        assert answer is not None and answer.status == 200, answer
        assert answer.json()["nonce"] == "chunked"
