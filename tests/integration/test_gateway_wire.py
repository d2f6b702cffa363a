"""The gateway on the wire: raw sockets, two callers with different keys, an engine that misbehaves.

Each test names a way an answer could reach the wrong caller, or a request reach a route the
key does not open, and checks it cannot: every answer carries the nonce of the request that
asked, and the engine's own record says what reached it.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from email.utils import parsedate_to_datetime

import pytest

from jupyter_modeldeploy.engines import ModelLimits, routes
from tests.support.gateway_harness import ENGINE_KEY, GatewayThread
from tests.support.raw_http import RawConnection, RawResponse

CHAT = "/v1/chat/completions"


class Callers:
    """A deployment with two keys: the fixed key (caller A) and a generated token (caller B)."""

    def __init__(self, gw: GatewayThread, table: routes.RouteTable = routes.LLAMA_SERVER, **kwargs: object):
        self.gw = gw
        self.dep, self.key_a = gw.harness.add(table, gw.address, **kwargs)  # type: ignore[arg-type]
        self.key_b, _ = gw.harness.tokens.create(deployment_id=self.dep.id)
        self.base = f"/modeldeploy/endpoints/{self.dep.route}"
        self.extra: dict[str, object] = {}

    def headers(self, key: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **extra}

    def ask(self, conn: RawConnection, key: str, nonce: str, path: str = CHAT, **extra: str) -> RawResponse | None:
        conn.request("POST", self.base + path, self.headers(key, **extra),
                     json.dumps({"nonce": nonce, **self.extra}).encode())
        return conn.final_response()


def nonce() -> str:
    return secrets.token_hex(6)


def assert_answers(response: RawResponse | None, expected: str) -> None:
    assert response is not None, "no answer"
    assert response.status == 200, (response.status, response.body[:300])
    assert response.json()["nonce"] == expected


def test_expect_100_continue_never_hands_an_answer_to_the_next_caller(gw: GatewayThread) -> None:
    callers = Callers(gw)
    mine, theirs = nonce(), nonce()
    body = json.dumps({"nonce": mine, "pad": "x" * 50_000}).encode()
    with RawConnection(gw.harness.port) as a:
        a.request("POST", callers.base + CHAT, callers.headers(callers.key_a, Expect="100-continue"), body,
                  send_body=False)
        interim = a.read_response()
        assert interim is not None and interim.status == 100  # the gateway's own 100, then the body
        a.send(body)
        assert_answers(a.final_response(), mine)
        with RawConnection(gw.harness.port) as b:
            assert_answers(callers.ask(b, callers.key_b, theirs), theirs)
        again = nonce()
        assert_answers(callers.ask(a, callers.key_a, again), again)
    assert all("expect" not in r.headers for r in gw.engine.received)


def test_a_refused_expect_request_gets_no_100_and_no_body_is_read(gw: GatewayThread) -> None:
    callers = Callers(gw)
    with RawConnection(gw.harness.port) as conn:
        conn.request("POST", callers.base + CHAT, {"Content-Length": str(64 << 20), "Expect": "100-continue",
                                                   "Content-Type": "application/json"}, send_body=False)
        answer = conn.read_response()
        assert answer is not None and answer.status == 401
        assert answer.json()["error"]["type"] == "authentication_error"
    assert gw.engine.received == []


def test_interim_answers_from_the_engine_are_skipped(gw: GatewayThread) -> None:
    callers = Callers(gw)
    with RawConnection(gw.harness.port) as a, RawConnection(gw.harness.port) as b:
        first, second = nonce(), nonce()
        answer = callers.ask(a, callers.key_a, first, **{"X-Fake-Mode": "interim"})
        assert_answers(answer, first)
        assert_answers(callers.ask(b, callers.key_b, second), second)


@pytest.mark.parametrize("mode", ["close-mid-body", "garbage"])
def test_an_engine_that_breaks_its_answer_leaves_the_pool_clean(gw: GatewayThread, mode: str) -> None:
    callers = Callers(gw)
    with RawConnection(gw.harness.port) as a:
        answer = callers.ask(a, callers.key_a, nonce(), **{"X-Fake-Mode": mode})
    if mode == "close-mid-body":
        # Headers were already sent: the cut answer must look cut, never complete.
        assert answer is None or not answer.complete
    else:
        assert answer is not None and answer.status == 502 and answer.json()["error"]["type"] == "upstream_error"
    with RawConnection(gw.harness.port) as b:
        for _ in range(3):
            n = nonce()
            assert_answers(callers.ask(b, callers.key_b, n), n)


def test_a_client_leaving_mid_stream_does_not_leave_its_stream_for_the_next(gw: GatewayThread) -> None:
    callers = Callers(gw)
    conn = RawConnection(gw.harness.port)
    conn.request("POST", callers.base + CHAT,
                 callers.headers(callers.key_a, **{"X-Fake-Mode": "sse", "X-Fake-Events": "200", "X-Fake-Gap": "0.02"}),
                 json.dumps({"nonce": "leaver", "stream": True}).encode())
    head = conn._read_until(b"\r\n\r\n")
    assert head is not None and b" 200 " in head
    conn._read_until(b"\n\n")
    conn.close()
    time.sleep(0.3)
    with RawConnection(gw.harness.port) as b:
        for _ in range(3):
            n = nonce()
            assert_answers(callers.ask(b, callers.key_b, n), n)
    deadline = time.monotonic() + 5
    while gw.dep_in_flight(callers.dep) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert callers.dep.in_flight == 0


@pytest.mark.parametrize("mode", ["no-content", "not-modified", "trailers", "head"])
def test_bodiless_and_trailer_answers_leave_the_pool_clean(gw: GatewayThread, mode: str) -> None:
    callers = Callers(gw)
    with RawConnection(gw.harness.port) as a:
        if mode == "head":
            a.request("HEAD", callers.base + "/v1/models", callers.headers(callers.key_a))
            answer = a.final_response("HEAD")
            assert answer is not None and answer.status == 200 and answer.body == b""
        else:
            answer = callers.ask(a, callers.key_a, "x", **{"X-Fake-Mode": mode})
            assert answer is not None
            expected = {"no-content": 204, "not-modified": 304, "trailers": 200}[mode]
            assert answer.status == expected
            if mode == "trailers":
                assert answer.json()["nonce"] == "x"
        for _ in range(3):  # the same client connection and the same pooled engine connection
            n = nonce()
            assert_answers(callers.ask(a, callers.key_a, n), n)
    with RawConnection(gw.harness.port) as b:
        n = nonce()
        assert_answers(callers.ask(b, callers.key_b, n), n)


def test_a_request_on_a_connection_the_engine_closed_is_sent_again(gw: GatewayThread) -> None:
    callers = Callers(gw)
    with RawConnection(gw.harness.port) as a:
        first = nonce()
        assert_answers(callers.ask(a, callers.key_a, first, **{"X-Fake-Mode": "drop-next"}), first)
        second = nonce()
        assert_answers(callers.ask(a, callers.key_a, second), second)  # not a 502
    assert len(gw.engine.dropped) == 1


def test_a_slow_engine_gets_504_and_its_late_answer_reaches_nobody(gw: GatewayThread) -> None:
    callers = Callers(gw)
    with RawConnection(gw.harness.port) as a:
        answer = callers.ask(a, callers.key_a, "late", **{"X-Fake-Mode": "slow", "X-Fake-Delay": "2.5"})
        assert answer is not None and answer.status == 504
    time.sleep(1.5)
    with RawConnection(gw.harness.port) as b:
        for _ in range(3):
            n = nonce()
            assert_answers(callers.ask(b, callers.key_b, n), n)


def test_pipelined_requests_get_their_own_answers_in_order(gw: GatewayThread) -> None:
    callers = Callers(gw)
    nonces = [nonce() for _ in range(4)]
    payload = b""
    for n in nonces:
        body = json.dumps({"nonce": n}).encode()
        payload += (f"POST {callers.base}{CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {callers.key_a}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    with RawConnection(gw.harness.port) as conn:
        conn.send(payload)
        for n in nonces:
            assert_answers(conn.final_response(), n)


def test_two_callers_in_parallel_only_ever_see_their_own_answers(gw: GatewayThread) -> None:
    callers = Callers(gw)
    modes = ["", "interim", "trailers", "drop-next", "no-content", "close-mid-body", ""]
    errors: list[str] = []

    def caller(key: str, tag: str) -> None:
        for i in range(40):
            mode = modes[i % len(modes)]
            with RawConnection(gw.harness.port) as conn:
                for j in range(2):
                    n = f"{tag}-{i}-{j}"
                    extra = {"X-Fake-Mode": mode} if mode and j == 0 else {}
                    answer = callers.ask(conn, key, n, **extra)
                    if answer is None or answer.status in (204, 304) or not answer.complete:
                        break
                    got = answer.json().get("nonce") if answer.status == 200 else None
                    if answer.status != 200 or got != n:
                        errors.append(f"{tag} asked {n}, got {answer.status} {got}")

    threads = [threading.Thread(target=caller, args=(k, t)) for k, t in ((callers.key_a, "a"), (callers.key_b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []


SMUGGLING = [
    "/props%3F", "/props%3f", "/%2570rops", "/props%23", "/props%2F", "/%70rops%3Fx", "/slots%3Fid=0",
    "/v1/models%0D%0AX-Injected:%201", "/health%0D%0A%0D%0AGET%20/slots%20HTTP/1.1%0D%0AHost:%20x%0D%0A%0D%0A",
    "/%u0070rops", "/v1/../slots", "/v1/%2E%2E/slots",
]


@pytest.mark.parametrize("path", SMUGGLING)
def test_encoded_paths_are_refused_and_never_reach_the_engine(gw: GatewayThread, path: str) -> None:
    callers = Callers(gw)
    with RawConnection(gw.harness.port) as conn:
        conn.request("GET", callers.base + path, callers.headers(callers.key_a))
        answer = conn.final_response("GET")
    assert answer is not None and 400 <= answer.status < 500, answer
    assert answer.json()["error"]["message"]
    assert gw.engine.received == []


def test_raw_non_ascii_and_control_bytes_in_the_path_are_400(gw: GatewayThread) -> None:
    callers = Callers(gw)
    for raw in (b"/pr\xc3\xb8ps", b"/props\x01", b"/pro\x7fps"):
        with RawConnection(gw.harness.port) as conn:
            conn.send(b"GET " + callers.base.encode() + raw + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      + callers.key_a.encode() + b"\r\n\r\n")
            answer = conn.final_response("GET")
        assert answer is not None and answer.status == 400, raw
    assert gw.engine.received == []


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/slots", 404), ("POST", "/slots?id_slot=0&action=save", 404), ("POST", "/props", 405),
    ("GET", "/lora-adapters", 404), ("POST", "/lora-adapters", 404), ("GET", "/metrics", 404), ("GET", "/", 404),
    ("POST", "/models/load", 404), ("GET", "/v1/chat/completions", 405),
])
def test_only_the_serving_api_passes(gw: GatewayThread, method: str, path: str, status: int) -> None:
    callers = Callers(gw)
    with RawConnection(gw.harness.port) as conn:
        conn.request(method, callers.base + path, callers.headers(callers.key_a), b"{}" if method == "POST" else b"")
        answer = conn.final_response(method)
    assert answer is not None and answer.status == status
    assert gw.engine.received == []


def test_vllm_dev_and_rl_routes_are_closed(gw: GatewayThread) -> None:
    callers = Callers(gw, routes.VLLM)
    for path in ("/collective_rpc", "/sleep", "/wake_up", "/abort_requests", "/update_weights", "/is_sleeping",
                 "/v1/load_lora_adapter", "/reset_prefix_cache", "/pause", "/start_profile"):
        with RawConnection(gw.harness.port) as conn:
            conn.request("POST", callers.base + path, callers.headers(callers.key_a), b"{}")
            answer = conn.final_response()
        assert answer is not None and answer.status == 404, path
    assert gw.engine.received == []


def test_serving_routes_reach_the_engine_with_its_key_only(gw: GatewayThread) -> None:
    callers = Callers(gw)
    with RawConnection(gw.harness.port) as conn:
        conn.request("GET", callers.base + "/props?x=%41", {**callers.headers(callers.key_a), "Cookie": "s=1",
                                                           "X-Forwarded-For": "6.6.6.6"})
        answer = conn.final_response("GET")
    assert answer is not None and answer.status == 200
    # The gateway's own Date (the engine's is not passed on), and no Server header of either.
    date = answer.header("Date")
    assert date is not None and abs(parsedate_to_datetime(date).timestamp() - time.time()) < 5
    assert answer.header("Server") is None
    seen = gw.engine.received[-1]
    assert seen.target == "/props?x=%41"
    assert seen.headers["authorization"] == f"Bearer {ENGINE_KEY}"
    assert "cookie" not in seen.headers and "x-forwarded-for" not in seen.headers


def test_refused_from_the_headers_before_any_body_is_read(gw: GatewayThread) -> None:
    callers = Callers(gw, limits={"m": ModelLimits(payload_limit_bytes=1000)})
    with RawConnection(gw.harness.port) as conn:  # a 64 MiB body announced, none sent
        conn.request("POST", callers.base + CHAT, {**callers.headers(callers.key_a), "Content-Length": str(64 << 20)},
                     send_body=False)
        answer = conn.final_response()
        assert answer is not None and answer.status == 413
    with RawConnection(gw.harness.port) as conn:  # chunked: refused once the running size passes the limit
        conn.request("POST", callers.base + CHAT, {**callers.headers(callers.key_a), "Transfer-Encoding": "chunked"},
                     send_body=False)
        chunk = b"x" * 600
        conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        answer = conn.final_response()
        assert answer is not None and answer.status == 413
    assert gw.engine.received == []


def test_health_and_cors_preflight_need_no_key(gw: GatewayThread) -> None:
    callers = Callers(gw, cors=["https://app.example.org"])
    with RawConnection(gw.harness.port) as conn:
        conn.request("GET", callers.base + "/health")
        answer = conn.final_response("GET")
        assert answer is not None and answer.status == 200 and answer.json() == {"status": "ok", "state": "active"}
        conn.request("OPTIONS", callers.base + CHAT, {"Origin": "https://app.example.org",
                                                       "Access-Control-Request-Method": "POST",
                                                       "Access-Control-Request-Headers": "authorization,content-type"})
        answer = conn.final_response("OPTIONS")
        assert answer is not None and answer.status == 204
        assert answer.header("Access-Control-Allow-Origin") == "https://app.example.org"
        conn.request("OPTIONS", callers.base + CHAT, {"Origin": "https://evil.example",
                                                       "Access-Control-Request-Method": "POST"})
        answer = conn.final_response("OPTIONS")
        assert answer is not None and answer.status == 403
        n = nonce()
        answer = callers.ask(conn, callers.key_a, n, Origin="https://app.example.org")
        assert_answers(answer, n)
        assert answer is not None and answer.header("Access-Control-Allow-Origin") == "https://app.example.org"
    assert [r.target for r in gw.engine.received] == [CHAT]


def test_per_model_routes_reach_that_model(gw: GatewayThread) -> None:
    callers = Callers(gw, routes.EMBEDDING_SERVER, models=["alpha", "beta"])
    with RawConnection(gw.harness.port) as conn:
        conn.request("GET", callers.base + "/beta/info", callers.headers(callers.key_a))
        assert conn.final_response("GET").status == 200  # type: ignore[union-attr]
        conn.request("POST", callers.base + "/alpha/v1/embeddings", callers.headers(callers.key_a), b'{"input": "a"}')
        assert conn.final_response().status == 200  # type: ignore[union-attr]
        conn.request("POST", callers.base + "/v1/embeddings", callers.headers(callers.key_a),
                     b'{"input": "a", "model": "gamma"}')
        unknown = conn.final_response()
        assert unknown is not None and unknown.status == 404 and unknown.json()["error"]["models"] == ["alpha", "beta"]
    info, embed = gw.engine.received
    assert info.target == "/beta/info"
    assert embed.target == "/v1/embeddings" and json.loads(embed.body)["model"] == "alpha"


def test_metric_labels_take_served_model_names_only(gw: GatewayThread) -> None:
    callers = Callers(gw)
    with RawConnection(gw.harness.port) as conn:
        for _ in range(3):
            conn.request("POST", callers.base + CHAT, callers.headers(callers.key_a),
                         json.dumps({"nonce": "n", "model": "z" * 4096}).encode())
            assert conn.final_response().status == 200  # type: ignore[union-attr]
    assert {r.model for r in gw.records()} == {"other"}


def test_deep_json_and_bad_content_length_are_4xx(gw: GatewayThread) -> None:
    callers = Callers(gw)
    with RawConnection(gw.harness.port) as conn:
        conn.request("POST", callers.base + CHAT, callers.headers(callers.key_a), b"[" * 100_000 + b"]" * 100_000)
        answer = conn.final_response()
        assert answer is not None and answer.status == 400
    with RawConnection(gw.harness.port) as conn:
        conn.request("POST", callers.base + CHAT, {**callers.headers(callers.key_a), "Content-Length": "-5"},
                     send_body=False)
        answer = conn.final_response()
        assert answer is not None and 400 <= answer.status < 500
    assert gw.engine.received == []


def test_streams_pass_event_for_event(gw: GatewayThread) -> None:
    callers = Callers(gw)
    with RawConnection(gw.harness.port) as conn:
        conn.request("POST", callers.base + CHAT,
                     callers.headers(callers.key_a, **{"X-Fake-Mode": "sse", "X-Fake-Events": "7"}),
                     json.dumps({"nonce": "s", "stream": True}).encode())
        answer = conn.final_response()
    assert answer is not None and answer.status == 200
    events = [e for e in answer.body.split(b"\n\n") if e]
    assert len(events) == 7 and json.loads(events[-1][6:])["usage"]["completion_tokens"] == 7
    record = gw.records()[-1]  # counted before the client could tell its answer ended
    assert record.usage is not None and record.usage.completion_tokens == 7 and record.streamed

