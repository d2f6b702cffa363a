"""A property-based fuzz of the gateway: any method, path, query and headers a client can send.

Against a running gateway in front of a recording engine, on the server's loop and in the gateway
worker: no answer is a 5xx, and no request outside the engine's allow-list ever reaches the engine.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_modeldeploy.engines import routes
from tests.support.gateway_harness import GatewayThread
from tests.support.raw_http import RawConnection

PIECES = [
    "v1", "chat", "completions", "models", "props", "slots", "health", "info", "embed", "m", "..", ".", "",
    "%2F", "%3F", "%23", "%25", "%2e", "%70", "%0D%0A", "%00", "%u0070", "%C3%A9", "%", "%zz", " ", "\t", "é",
    "\x01", "\\", "#", "?", ";", "lora-adapters", "sleep", "collective_rpc", "metrics", "~", "@", ":",
]
segment = st.lists(st.sampled_from(PIECES) | st.text(min_size=1, max_size=6), min_size=1, max_size=4).map("".join)
path = st.lists(segment, min_size=0, max_size=5).map(lambda parts: "/" + "/".join(parts))
query = st.none() | st.text(max_size=20)
method = st.sampled_from(["GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH", "TRACE", "CONNECT", "FOO"])
header_name = st.sampled_from([
    "Content-Type", "Accept", "Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers",
    "Expect", "Transfer-Encoding", "Connection", "X-Api-Key", "Host", "Te", "Upgrade", "Content-Encoding", "X-A",
]) | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"), min_size=1,
              max_size=12)
header_value = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\r\n"),
                       max_size=40)
headers = st.dictionaries(header_name, header_value, max_size=5)
body = st.sampled_from([b"", b"{}", b'{"model": "m", "stream": true}', b"[[[[", b"\xff\xfe", b'{"input": [1, 2]}'])


@pytest.fixture(scope="module", params=["loop", "worker"])
def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory,
                 request: pytest.FixtureRequest) -> Iterator[tuple[GatewayThread, str, str]]:
    """On the server's own loop, and in the gateway worker (where small whole requests go by the plain path)."""
    gw = GatewayThread(tmp_path_factory.mktemp("fuzz"), upstream_timeout_s=2, worker=request.param == "worker")
    dep, key = gw.harness.add(routes.LLAMA_SERVER + routes.EMBEDDING_SERVER, gw.address, models=["m", "n"])
    yield gw, f"/modeldeploy/endpoints/{dep.route}", key
    gw.close()


def allowed(method_name: str, target: str) -> bool:
    engine_path = target.split("?", 1)[0]
    table = routes.LLAMA_SERVER + routes.EMBEDDING_SERVER
    route = table.find(engine_path)
    if route is None and engine_path.count("/") >= 2:
        scoped = table.find("/" + engine_path.split("/", 2)[2])
        route = scoped if scoped is not None and scoped.model_scoped else None
    return route is not None and method_name in route.methods


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=method, path=path, query=query, headers=headers, body=body, with_key=st.booleans())
def test_no_5xx_and_nothing_outside_the_allow_list(
    fuzz_gateway: tuple[GatewayThread, str, str], method: str, path: str, query: str | None,
    headers: dict[str, str], body: bytes, with_key: bool,
) -> None:
    gw, base, key = fuzz_gateway
    target = base + path + (f"?{query}" if query is not None else "")
    sent = dict(headers)
    if with_key:
        sent["Authorization"] = f"Bearer {key}"
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k in sent):
        sent["Content-Length"] = str(len(body))
    with RawConnection(gw.harness.port, timeout=10) as conn:
        try:
            conn.request(method, target, sent, body)
        except UnicodeEncodeError:
            return
        answer = conn.final_response(method)
    if answer is not None:  # a connection closed on a request the server could not parse is fine
        assert answer.status < 500, (method, target, sent, answer.status, answer.body[:200])
    for received in gw.engine.received:
        assert allowed(received.method, received.target), (received.method, received.target)
