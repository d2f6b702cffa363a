"""A request is counted before its client can tell that its answer ended, on every way an answer is relayed.

A client has its answer before the connection's last bytes: the OpenAI SDKs stop reading a stream
at its `data: [DONE]` event and close, and a body of known length is whole at its last byte. A
client that asks for its usage at that moment must find the request counted (CI once saw 3 of 4
with the SDK against llama-server). The engine here sends `[DONE]`, then its last chunk only half
a second later: the answer's end as the client sees it comes first.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_modeldeploy.engines.routes import LLAMA_SERVER
from tests.support.gateway_harness import GatewayThread
from tests.support.raw_http import RawConnection

CHAT = "/v1/chat/completions"
DONE = b"data: [DONE]\n\n"


@pytest.fixture(params=["loop", "worker"])
def way(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, GatewayThread]]:
    """The server's own loop; the gateway worker, handed the connection by the server."""
    thread = GatewayThread(tmp_path, upstream_timeout_s=5, worker=request.param == "worker")
    yield request.param, thread
    thread.close()


def counted(gw: GatewayThread) -> int:
    """The requests counted, as a REST reader of usage finds them (what the worker reported is taken first)."""
    return gw.call(lambda: len(gw.harness.records))


def test_a_client_that_stops_at_done_finds_its_stream_counted(way: tuple[str, GatewayThread]) -> None:
    name, gw = way
    dep, key = gw.harness.add(LLAMA_SERVER, gw.address)
    base = f"/modeldeploy/endpoints/{dep.route}"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with RawConnection(gw.harness.port) as conn:
        conn.request("POST", base + CHAT, headers, json.dumps({"nonce": "first"}).encode())
        assert (first := conn.final_response()) is not None and first.status == 200
        for n in range(2, 5):
            conn.request("POST", base + CHAT, {**headers, "X-Fake-Mode": "sse", "X-Fake-Events": "2",
                                               "X-Fake-Gap": "0", "X-Fake-Done": "0.5"},
                         json.dumps({"nonce": f"s{n}", "stream": True}).encode())
            seen = conn.read_until(DONE)
            assert seen is not None and b'"s%d"' % n in seen
            assert counted(gw) == n, f"request {n} was not counted when its client had [DONE] ({name})"
            assert conn.read_until(b"0\r\n\r\n") is not None  # the rest of the answer, for the next request
    records = gw.records()
    assert [r.usage.total if r.usage else None for r in records] == [8, 4, 4, 4]


def has_all_of_length(got: bytes) -> bool:
    """A head and as many body bytes as its Content-Length says."""
    head, sep, body = got.partition(b"\r\n\r\n")
    lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    return bool(sep) and len(body) >= int(lengths[0])


def has_head(got: bytes) -> bool:
    return b"\r\n\r\n" in got


@pytest.mark.parametrize(("method", "mode", "whole"), [
    ("POST", "", has_all_of_length),  # JSON with a Content-Length: whole at its last byte
    ("HEAD", "", has_head),  # no body follows: whole at its head
    ("POST", "no-content", has_head),
])
def test_an_answer_is_whole_only_once_its_request_is_counted(way: tuple[str, GatewayThread], method: str, mode: str,
                                                            whole: Any) -> None:
    name, gw = way
    dep, key = gw.harness.add(LLAMA_SERVER, gw.address)
    body = b'{"nonce": "n"}'
    head = (f"{method} /modeldeploy/endpoints/{dep.route}{CHAT} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\nX-Fake-Mode: {mode}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    for n in (1, 2):
        with socket.create_connection(("127.0.0.1", gw.harness.port), timeout=5) as client:
            client.sendall(head + body)
            got = b""
            while not whole(got):
                got += client.recv(1 << 16)
            assert got.startswith(b"HTTP/1.1 ")
            assert counted(gw) == n, f"{method} {mode or 'json'}: whole before it was counted ({name})"
