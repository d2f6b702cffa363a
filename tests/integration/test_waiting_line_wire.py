"""A deployment at its concurrency limit queues requests instead of refusing them at once, fairly.

On both paths of the `gw` fixture (the server's own loop, and the gateway worker): past
`max_concurrent_requests` a request waits in the deployment's line and is answered; the engine
never has more than the limit in flight; a key sending a flood does not push another key's request
back, and interactive keys go before batch keys; a waiting stream gets its head and SSE comments at
once; a full line or a wait past `queue_timeout_s` is a 429 with Retry-After (for a held stream: its
one error event); a client that leaves while it waits takes nothing with it.
"""

from __future__ import annotations

import json
import threading
import time

from jupyter_modeldeploy.engines import routes
from jupyter_modeldeploy.gateway.tokens import Priority
from jupyter_modeldeploy.supervisor import Deployment
from tests.support.gateway_harness import GatewayThread
from tests.support.raw_http import RawConnection, RawResponse

CHAT = "/v1/chat/completions"
SERVICE_S = 0.06  # each request's time at the paced engine


def post(conn: RawConnection, base: str, key: str, body: dict[str, object], **headers: str) -> RawResponse | None:
    conn.request("POST", base + CHAT, {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                                       **headers}, json.dumps(body).encode())
    return conn.final_response()


def send_stream(conn: RawConnection, base: str, key: str, nonce: str, **headers: str) -> None:
    """A streamed chat request, its answer left to read."""
    conn.request("POST", base + CHAT, {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                                       **headers}, json.dumps({"nonce": nonce, "stream": True}).encode())


def slow(delay: float = SERVICE_S) -> dict[str, str]:
    return {"X-Fake-Mode": "slow", "X-Fake-Delay": str(delay)}


def flood(gw: GatewayThread, base: str, key: str, clients: int, stop: threading.Event,
          statuses: list[int]) -> list[threading.Thread]:
    """`clients` keep-alive clients sending paced requests with `key` until `stop`."""

    def client(n: int) -> None:
        with RawConnection(gw.harness.port) as conn:
            i = 0
            while not stop.is_set():
                answer = post(conn, base, key, {"nonce": f"flood-{n}-{i}"}, **slow())
                statuses.append(answer.status if answer is not None else 0)
                i += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def depth(gw: GatewayThread, dep: Deployment) -> int:
    """How many requests wait in the deployment's line, wherever it is kept (the worker reports its own)."""
    gateway = gw.harness.gateway

    def read() -> int:
        gateway.settle()
        return gateway.line_stats(dep.id).depth

    return int(gw.call(read))


def hold_the_slot(gw: GatewayThread, base: str, key: str, seconds: float) -> threading.Thread:
    """A request that takes the deployment's one slot for `seconds`; returns once the engine has it."""
    holder = threading.Thread(target=lambda: post(RawConnection(gw.harness.port), base, key, {"nonce": "holder"},
                                                  **slow(seconds)), daemon=True)
    holder.start()
    deadline = time.monotonic() + 10
    while gw.engine.in_flight < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    return holder


def engine_nonces(gw: GatewayThread) -> list[str]:
    return [json.loads(r.body or b"{}").get("nonce", "") for r in list(gw.engine.received)]


def test_past_the_limit_requests_wait_and_every_one_is_answered(gw: GatewayThread) -> None:
    dep, key = gw.harness.add(routes.LLAMA_SERVER, gw.address, max_concurrent=1)
    base = f"/modeldeploy/endpoints/{dep.route}"
    statuses: list[int] = []

    def client(n: int) -> None:
        with RawConnection(gw.harness.port) as conn:
            for i in range(3):
                answer = post(conn, base, key, {"nonce": f"{n}-{i}"}, **slow(0.02))
                statuses.append(answer.status if answer is not None else 0)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [200] * 18, sorted(statuses)
    assert gw.engine.peak_in_flight == 1
    assert gw.call(lambda: dep.in_flight) == 0
    assert depth(gw, dep) == 0
    shown = gw.call(lambda: dict(dep.queue))  # what the record, the dashboard and Prometheus show
    assert shown["depth"] == 0 and 0 < shown["served"] < 18 and shown["rejected"] == 0
    assert shown["mean_wait_s"] > 0.0 and shown["wait_s_total"] >= shown["mean_wait_s"]


def quiet_key_behind(gw: GatewayThread, flood_priority: Priority, quiet_priority: Priority) -> list[int]:
    """A key flooding from 8 clients, and another key sending one request at a time: for each of the second
    key's requests, how many of the flood's reached the engine between its sending and its own arrival."""
    dep, _ = gw.harness.add(routes.LLAMA_SERVER, gw.address, max_concurrent=1)
    base = f"/modeldeploy/endpoints/{dep.route}"
    flood_key, _ = gw.harness.tokens.create(deployment_id=dep.id, priority=flood_priority)
    quiet_key, _ = gw.harness.tokens.create(deployment_id=dep.id, priority=quiet_priority)
    gw.call(gw.harness.gateway.publish)
    stop = threading.Event()
    statuses: list[int] = []
    threads = flood(gw, base, flood_key, 8, stop, statuses)
    overtaken: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while depth(gw, dep) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        with RawConnection(gw.harness.port) as conn:
            for i in range(5):
                before = len(gw.engine.received)
                answer = post(conn, base, quiet_key, {"nonce": f"quiet-{i}"}, **slow())
                assert answer is not None and answer.status == 200
                overtaken.append(engine_nonces(gw).index(f"quiet-{i}") - before)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert set(statuses) == {200}, sorted(set(statuses))
    assert gw.engine.peak_in_flight == 1
    return overtaken


def test_a_flooding_key_does_not_push_another_keys_requests_back(gw: GatewayThread) -> None:
    """Served first come, first served, the quiet key's request would wait behind the flood's ~7."""
    overtaken = quiet_key_behind(gw, "interactive", "interactive")
    assert max(overtaken) <= 1, overtaken


def test_interactive_keys_go_before_batch_keys(gw: GatewayThread) -> None:
    overtaken = quiet_key_behind(gw, "batch", "interactive")
    assert max(overtaken) <= 1, overtaken


def test_a_waiting_stream_gets_its_head_and_comments_at_once_then_its_events(gw: GatewayThread) -> None:
    dep, key = gw.harness.add(routes.LLAMA_SERVER, gw.address, max_concurrent=1)
    base = f"/modeldeploy/endpoints/{dep.route}"
    holder = hold_the_slot(gw, base, key, 1.0)
    with RawConnection(gw.harness.port) as conn:
        send_stream(conn, base, key, "waiting", **{"X-Fake-Mode": "sse", "X-Fake-Events": "3", "X-Fake-Done": "0"})
        early = conn.read_until(b": waiting for a slot")
        assert early is not None and b" 200 " in early.split(b"\r\n", 1)[0], early
        assert b"text/event-stream" in early
        assert gw.engine.in_flight == 1 and "waiting" not in engine_nonces(gw)  # still waiting: the holder's turn
        rest = conn.read_until(b"0\r\n\r\n")
    holder.join(10)
    assert rest is not None and b"t2 " in rest and b"data: [DONE]" in rest, rest
    records = [r for r in gw.records() if r.deployment_id == dep.id]
    assert {r.status for r in records} == {200} and any(r.streamed and r.usage for r in records)


def test_a_full_line_and_a_wait_past_the_timeout_are_429_with_retry_after(gw: GatewayThread) -> None:
    dep, key = gw.harness.add(routes.LLAMA_SERVER, gw.address, max_concurrent=1,
                              options={"queue_size": 1, "queue_timeout_s": 0.4})
    base = f"/modeldeploy/endpoints/{dep.route}"
    answers: dict[str, RawResponse | None] = {}

    def send(name: str, delay: float) -> None:
        with RawConnection(gw.harness.port) as conn:
            answers[name] = post(conn, base, key, {"nonce": name}, **slow(delay))

    holder = threading.Thread(target=send, args=("holder", 1.2))
    holder.start()
    deadline = time.monotonic() + 10
    while gw.engine.in_flight < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    waiter = threading.Thread(target=send, args=("waiter", 0.0))
    waiter.start()
    while depth(gw, dep) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    with RawConnection(gw.harness.port) as conn:
        full = post(conn, base, key, {"nonce": "third"})
        assert full is not None and full.status == 429 and full.header("Retry-After") == "1"
        assert "queue is full (queue_size=1)" in full.json()["error"]["message"]
    waiter.join(10)
    holder.join(10)
    late = answers["waiter"]
    assert late is not None and late.status == 429 and late.header("Retry-After") == "1"
    assert "waited 0.4 s in the queue" in late.json()["error"]["message"]
    assert answers["holder"] is not None and answers["holder"].status == 200
    assert "waiter" not in engine_nonces(gw) and "third" not in engine_nonces(gw)
    assert (gw.call(lambda: dep.in_flight), depth(gw, dep)) == (0, 0)
    assert gw.call(lambda: dep.queue["rejected"]) == 2  # the third (the line was full), the waiter (waited too long)


def test_a_held_stream_whose_wait_runs_out_ends_with_one_error_event(gw: GatewayThread) -> None:
    dep, key = gw.harness.add(routes.LLAMA_SERVER, gw.address, max_concurrent=1, options={"queue_timeout_s": 0.3})
    base = f"/modeldeploy/endpoints/{dep.route}"
    holder = hold_the_slot(gw, base, key, 1.0)
    with RawConnection(gw.harness.port) as conn:
        send_stream(conn, base, key, "s")
        raw = conn.read_until(b"0\r\n\r\n")
    holder.join(10)
    assert raw is not None and b": waiting for a slot" in raw
    event = raw[raw.index(b"data: "):].split(b"\n\n", 1)[0]
    assert json.loads(event[len(b"data: "):])["error"]["type"] == "rate_limit_error", event
    assert "s" not in engine_nonces(gw)


def test_a_client_that_leaves_while_it_waits_takes_nothing_with_it(gw: GatewayThread) -> None:
    dep, key = gw.harness.add(routes.LLAMA_SERVER, gw.address, max_concurrent=1)
    base = f"/modeldeploy/endpoints/{dep.route}"
    holder = hold_the_slot(gw, base, key, 0.8)
    conn = RawConnection(gw.harness.port)
    conn.request("POST", base + CHAT, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                 json.dumps({"nonce": "leaver"}).encode())
    deadline = time.monotonic() + 10
    while depth(gw, dep) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    conn.close()
    holder.join(10)
    with RawConnection(gw.harness.port) as again:
        answer = post(again, base, key, {"nonce": "after"})
    assert answer is not None and answer.status == 200
    assert "leaver" not in engine_nonces(gw)
    assert (gw.call(lambda: dep.in_flight), depth(gw, dep)) == (0, 0)


def test_an_engine_error_to_a_held_stream_is_its_one_event(gw: GatewayThread) -> None:
    """The stream's head went out while it waited: the engine's own refusal comes as the stream's error event."""
    dep, key = gw.harness.add(routes.LLAMA_SERVER, gw.address, max_concurrent=1)
    base = f"/modeldeploy/endpoints/{dep.route}"
    holder = hold_the_slot(gw, base, key, 0.3)
    with RawConnection(gw.harness.port) as conn:
        send_stream(conn, base, key, "refused", **{"X-Fake-Mode": "bad-request"})
        raw = conn.read_until(b"0\r\n\r\n")
    holder.join(10)
    assert raw is not None and b" 200 " in raw.split(b"\r\n", 1)[0] and b": waiting for a slot" in raw
    event = raw[raw.index(b"data: "):].split(b"\n\n", 1)[0]
    assert json.loads(event[len(b"data: "):])["error"]["message"] == "the engine refuses this", event
    assert [r.status for r in gw.records() if r.deployment_id == dep.id][-1] == 400

