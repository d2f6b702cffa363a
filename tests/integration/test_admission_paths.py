"""Every path that serves an endpoint request decides as the one admission does.

The same random requests (method, path, key, origin, body) go to a gateway answering on its own
loop, to one that hands its connections to the gateway worker (which answers plain requests in
callbacks, `relay.plain`), and to one whose worker serves every request by the exchange, all in
front of the same kind of deployment with the same kinds of keys; `admission.admit` is asked directly on each gateway's
state as well (the worker admits with the views the server published of that state). The answers'
statuses and content types must agree with each other, and a refusal the admission decides from the head must be
the answer on the wire.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tornado.httputil import HTTPHeaders

from jupyter_modeldeploy.engines import routes
from jupyter_modeldeploy.gateway import admission
from tests.support.gateway_harness import GatewayThread
from tests.support.raw_http import RawConnection

TABLE = routes.LLAMA_SERVER + routes.EMBEDDING_SERVER
KEY_KINDS = ["none", "fixed", "inference", "read", "scoped", "revoked", "unknown"]


@dataclass
class Side:
    """One gateway, its deployment's base path and its keys by kind."""

    gw: GatewayThread
    base: str
    keys: dict[str, str | None]


def side(gw: GatewayThread) -> Side:
    dep, fixed = gw.harness.add(TABLE, gw.address, models=["m", "n"], cors=["https://app.example"])
    tokens = gw.harness.tokens
    inference, _ = tokens.create(deployment_id=dep.id)
    read, _ = tokens.create(deployment_id=dep.id, role="read")
    scoped, _ = tokens.create(deployment_id=dep.id, models=["n"])
    revoked, info = tokens.create(deployment_id=dep.id)
    tokens.revoke(info.id)
    keys = {"none": None, "fixed": fixed, "inference": inference, "read": read, "scoped": scoped,
            "revoked": revoked, "unknown": "sk-never-issued"}
    return Side(gw, f"/modeldeploy/endpoints/{dep.route}", keys)


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Side]]:
    loop = GatewayThread(tmp_path_factory.mktemp("loop"), upstream_timeout_s=2)
    worker = GatewayThread(tmp_path_factory.mktemp("worker"), upstream_timeout_s=2, worker=True)
    exchange = GatewayThread(tmp_path_factory.mktemp("exchange"), upstream_timeout_s=2, worker=True, plain=False)
    yield [side(loop), side(worker), side(exchange)]  # the worker answers plain requests in callbacks (`relay.plain`)
    loop.close()
    worker.close()
    exchange.close()


paths = st.sampled_from([
    "/v1/models", "/v1/chat/completions", "/v1/embeddings", "/embed", "/rerank", "/health", "/slots", "/props",
    "/m/info", "/n/v1/chat/completions", "/x/info", "/v1/messages", "/v1/../v1/models", "/%2e%2e/etc", "",
]) | st.text(alphabet="/abv1.%", max_size=12).map(lambda p: "/" + p)
methods = st.sampled_from(["GET", "POST", "HEAD", "OPTIONS", "DELETE", "PUT"])
bodies = st.sampled_from([
    None, {}, {"model": "m"}, {"model": "n", "stream": True}, {"model": "zzz"}, {"input": ["a"] * 3},
    {"stream": True},
])


def head_of(method: str, target: str, headers: dict[str, str]) -> admission.RequestHead:
    path, _, query = target.partition("?")
    return admission.RequestHead(method, path, query, HTTPHeaders(headers))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=methods, path=paths, key=st.sampled_from(KEY_KINDS), body=bodies,
       origin=st.sampled_from([None, "https://app.example", "https://evil.example"]),
       preflight=st.booleans())
def test_every_path_decides_as_the_one_admission(sides: list[Side], method: str, path: str, key: str,
                                                 body: dict[str, object] | None, origin: str | None,
                                                 preflight: bool) -> None:
    statuses = []
    for s in sides:
        headers: dict[str, str] = {}
        if s.keys[key] is not None:
            headers["Authorization"] = f"Bearer {s.keys[key]}"
        if origin is not None:
            headers["Origin"] = origin
            if preflight and method == "OPTIONS":
                headers["Access-Control-Request-Method"] = "POST"
        raw = b""
        if body is not None and method not in ("GET", "HEAD"):
            raw = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
            headers["Content-Length"] = str(len(raw))
        target = s.base + path
        decided = s.gw.call(lambda s=s, target=target, headers=headers: admission.admit(
            head_of(method, target, headers), s.gw.harness.gateway, time.time()))
        with RawConnection(s.gw.harness.port) as conn:
            conn.request(method, target, headers, raw)
            answer = conn.final_response(method)
        assert answer is not None, f"no answer to {method} {target}"
        if decided.refusal is not None:
            assert answer.status == decided.refusal.status, (method, target, key, decided.refusal.message)
        else:
            assert answer.status < 500 or answer.status in (502, 504), (method, target, answer.status)
        statuses.append((answer.status, answer.header("Content-Type")))
    assert len(set(statuses)) == 1, (f"{method} {path} with the {key} key: loop {statuses[0]}, worker {statuses[1]}, "
                                     f"worker without plain requests {statuses[2]}")
