"""One admission for every endpoint request: limits and revocation exact by construction.

Each test reproduces a defect of the split data plane (the server admitting a request, then the
relay worker serving the connection's next requests from a copy): a concurrency limit exceeded
at the engine, a revoked key served, a removed adapter still forwarded, a new admission rule
skipped, a refused request that broke its connection, a refusal in the wrong API's shape. They
run on both paths of the `gw` fixture: on the server's own loop, and handed to the gateway worker, which
then serves every request of the connection itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import pytest

from jupyter_modeldeploy.engines import ModelLimits, routes
from tests.support.gateway_harness import GatewayThread
from tests.support.raw_http import RawConnection, RawResponse

CHAT = "/v1/chat/completions"


def post(conn: RawConnection, base: str, key: str, body: dict[str, object], path: str = CHAT,
         **headers: str) -> RawResponse | None:
    conn.request("POST", base + path, {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                                       **headers}, json.dumps(body).encode())
    return conn.final_response()


def test_the_concurrency_limit_holds_at_the_engine_under_concurrent_arrivals(gw: GatewayThread) -> None:
    """max_concurrent_requests=2, 32 keep-alive clients: the engine never has more than 2 in flight."""
    dep, key = gw.harness.add(routes.LLAMA_SERVER, gw.address, max_concurrent=2)
    base = f"/modeldeploy/endpoints/{dep.route}"
    statuses: list[int] = []
    lock = threading.Lock()
    stream: dict[str, object] = {}

    def client() -> None:
        with RawConnection(gw.harness.port) as conn:
            for i in range(6):
                answer = post(conn, base, key, {"nonce": str(i), "pad": "x" * 2000, **stream},
                              **{"X-Fake-Mode": "slow", "X-Fake-Delay": "0.02"})
                assert answer is not None, "the connection was dropped instead of answered"
                with lock:
                    statuses.append(answer.status)

    threads = [threading.Thread(target=client) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(statuses) == 32 * 6
    assert set(statuses) <= {200, 429}, set(statuses)
    assert statuses.count(200) >= 2
    assert gw.engine.peak_in_flight <= 2, f"the engine saw {gw.engine.peak_in_flight} requests in flight at once"
    assert gw.call(lambda: dep.in_flight) == 0  # every slot given back


def test_a_revoked_key_is_never_served_after_the_revocation_returned(gw: GatewayThread) -> None:
    """200 revocations under 8 keep-alive clients: no request sent after a revoke returned is served."""
    dep, _ = gw.harness.add(routes.LLAMA_SERVER, gw.address)
    base = f"/modeldeploy/endpoints/{dep.route}"
    current: dict[str, str] = {}
    late: list[tuple[str, int]] = []
    revoked: set[str] = set()
    stop = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        with RawConnection(gw.harness.port) as conn:
            while not stop.is_set():
                with lock:
                    key = current["key"]
                    was_revoked = key in revoked  # read before the request is sent
                conn.request("GET", base + "/v1/models", {"Authorization": f"Bearer {key}"})
                answer = conn.final_response("GET")
                assert answer is not None
                if was_revoked and answer.status == 200:
                    late.append((key[:8], answer.status))

    first, info = gw.harness.tokens.create(deployment_id=dep.id)
    current["key"], current["id"] = first, info.id
    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(200):
            old_key, old_id = current["key"], current["id"]
            gw.call(lambda old_id=old_id: gw.harness.tokens.revoke(old_id))
            with lock:
                revoked.add(old_key)
            time.sleep(0.002)  # requests with the revoked key are sent meanwhile
            new, new_info = gw.harness.tokens.create(deployment_id=dep.id)
            with lock:
                current["key"], current["id"] = new, new_info.id
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert late == [], f"{len(late)} requests sent after their key's revocation returned were served"


def test_a_removed_model_is_no_longer_forwarded_on_a_kept_connection(gw: GatewayThread) -> None:
    """An adapter removed from the plan's models is refused at once, also on a connection served before."""
    dep, key = gw.harness.add(routes.LLAMA_SERVER, gw.address, models=["base", "lora1", "lora2"])
    base = f"/modeldeploy/endpoints/{dep.route}"
    stream: dict[str, object] = {}
    with RawConnection(gw.harness.port) as conn:
        for _ in range(3):
            answer = post(conn, base, key, {"model": "lora1", "nonce": "a", **stream})
            assert answer is not None and answer.status == 200
        time.sleep(0.1)
        gw.call(lambda: dep.plan.models.remove("lora1"))  # what Supervisor.adapter does on 'remove'
        before = len(gw.engine.received)
        answer = post(conn, base, key, {"model": "lora1", "nonce": "b", **stream})
        assert answer is not None and answer.status in (400, 404), answer and answer.status
        assert len(gw.engine.received) == before, "the removed model's request reached the engine"


#: A rule added to the one admission, in every process that imports it (the gateway worker too: it
#: starts with this folder's `sitecustomize` on its path).
NEW_RULE = """
from jupyter_modeldeploy.gateway import admission
from jupyter_modeldeploy.gateway.refusals import Refusal

_original = admission.admit


def admit(head, state, now):
    found = _original(head, state, now)
    if found.refusal is None and head.header("x-blocked-by-test"):
        found.refuse(Refusal(403, "blocked by the test's rule", "permission_error"))
    return found


admission.admit = admit
"""


@pytest.mark.parametrize("path_name", ["loop", "worker"])
def test_an_admission_rule_applies_to_every_request_on_every_path(tmp_path: Path, path_name: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule added to the one admission refuses a kept connection's next requests too, wherever they are served."""
    rule_dir = tmp_path / "rule"
    rule_dir.mkdir()
    (rule_dir / "sitecustomize.py").write_text(NEW_RULE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(rule_dir), os.environ.get("PYTHONPATH", "")]))
    from jupyter_modeldeploy.gateway import admission

    original = admission.admit
    exec(compile(NEW_RULE, "rule", "exec"), {})  # the same rule in this process (the loop path)
    try:
        gw = GatewayThread(tmp_path, upstream_timeout_s=2, worker=path_name == "worker")
        try:
            dep, key = gw.harness.add(routes.LLAMA_SERVER, gw.address)
            base = f"/modeldeploy/endpoints/{dep.route}"
            with RawConnection(gw.harness.port) as conn:
                for _ in range(3):
                    answer = post(conn, base, key, {"nonce": "a"})
                    assert answer is not None and answer.status == 200
                for path, method in ((CHAT, "POST"), ("/v1/models", "GET")):
                    conn.request(method, base + path, {"Authorization": f"Bearer {key}", "X-Blocked-By-Test": "1",
                                                       "Content-Type": "application/json"},
                                 json.dumps({"nonce": "b"}).encode() if method == "POST" else b"")
                    answer = conn.final_response(method)
                    assert answer is not None and answer.status == 403, (path, answer and answer.status)
            if path_name == "worker":
                assert gw.harness.gateway.plane is not None and gw.harness.gateway.plane.handed_off == 1
        finally:
            gw.close()
    finally:
        admission.admit = original


def test_an_early_refusal_keeps_the_connection_for_the_next_request(gw: GatewayThread) -> None:
    """A 401 answered before a small body is read: the client's next request on the connection is answered."""
    dep, key = gw.harness.add(routes.LLAMA_SERVER, gw.address)
    base = f"/modeldeploy/endpoints/{dep.route}"
    with RawConnection(gw.harness.port) as conn:
        refused = post(conn, base, "wrong-key", {"nonce": "x", "pad": "y" * 3000})
        assert refused is not None and refused.status == 401
        assert refused.header("Connection") != "close"
        answer = post(conn, base, key, {"nonce": "next"})
        assert answer is not None and answer.status == 200 and answer.json()["nonce"] == "next"


def test_an_early_refusal_of_a_large_body_says_the_connection_closes(gw: GatewayThread) -> None:
    """A refusal before a large body is read says `Connection: close`: the client knows not to reuse it."""
    dep, _ = gw.harness.add(routes.LLAMA_SERVER, gw.address)
    base = f"/modeldeploy/endpoints/{dep.route}"
    with RawConnection(gw.harness.port) as conn:
        conn.request("POST", base + CHAT, {"Authorization": "Bearer wrong", "Content-Type": "application/json",
                                           "Content-Length": str(8 << 20)}, send_body=False)
        refused = conn.final_response()
        assert refused is not None and refused.status == 401
        assert (refused.header("Connection") or "").lower() == "close"


@pytest.mark.parametrize("path", ["/embed", "/embed_sparse", "/rerank"])
def test_a_refusal_on_a_tei_route_is_tei_shaped(gw: GatewayThread, path: str) -> None:
    dep, key = gw.harness.add(routes.EMBEDDING_SERVER, gw.address,
                              limits={"m": ModelLimits(max_client_batch_size=32)})
    base = f"/modeldeploy/endpoints/{dep.route}"
    with RawConnection(gw.harness.port) as conn:
        if path != "/rerank":
            too_many = post(conn, base, key, {"inputs": ["a sentence"] * 40}, path=path)
            assert too_many is not None and too_many.status in (413, 422), too_many and too_many.status
            body = too_many.json()
            assert isinstance(body["error"], str) and "32" in body["error"] and body["error_type"] == "Validation"
        unauthorised = post(conn, base, "wrong-key", {"inputs": ["x"]}, path=path)
        assert unauthorised is not None and unauthorised.status == 401
        assert isinstance(unauthorised.json()["error"], str) and "error_type" in unauthorised.json()
    with RawConnection(gw.harness.port) as conn:  # the OpenAI routes keep the OpenAI shape
        openai = post(conn, base, "wrong-key", {"input": ["x"]}, path="/v1/embeddings")
        assert openai is not None and openai.status == 401 and isinstance(openai.json()["error"], dict)


def test_a_refusal_on_anthropics_route_is_anthropic_shaped(gw: GatewayThread) -> None:
    dep, _ = gw.harness.add(routes.LLAMA_SERVER, gw.address)
    base = f"/modeldeploy/endpoints/{dep.route}"
    with RawConnection(gw.harness.port) as conn:
        answer = post(conn, base, "wrong-key", {"model": "m", "messages": []}, path="/v1/messages")
        assert answer is not None and answer.status == 401
        body = answer.json()
        assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
        assert isinstance(body["error"]["message"], str)


def test_a_worker_that_died_is_replaced_and_the_counts_go_on(tmp_path: Path) -> None:
    """Killed mid-run: the server serves (and counts) meanwhile, starts another worker, and that one goes on
    from every count so far: a key's requests per minute hold across all three."""
    import signal

    gw = GatewayThread(tmp_path, upstream_timeout_s=2, worker=True)
    try:
        dep, _ = gw.harness.add(routes.LLAMA_SERVER, gw.address)
        base = f"/modeldeploy/endpoints/{dep.route}"
        from jupyter_modeldeploy.gateway.tokens import Quotas

        key, _ = gw.call(lambda: gw.harness.tokens.create(deployment_id=dep.id, quotas=Quotas(requests_per_minute=4)))
        plane = gw.harness.gateway.plane
        assert plane is not None

        def ask() -> int:
            with RawConnection(gw.harness.port) as conn:  # a new connection: handed to whoever serves now
                answer = post(conn, base, key, {"nonce": "n"})
                assert answer is not None
                return answer.status

        assert [ask(), ask()] == [200, 200]  # counted by the worker
        first = plane.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while gw.call(lambda: plane.serving) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.dep_in_flight(dep) == 0
        assert [ask(), ask()] == [200, 200]  # counted by the server, which knew the worker's two
        assert ask() == 429
        deadline = time.monotonic() + 20
        while not gw.call(lambda: plane.serving) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert plane.pid not in (None, first)
        assert ask() == 429  # the new worker goes on from the four requests of this minute
        assert plane.handed_off >= 3
    finally:
        gw.close()


def test_a_handed_over_connection_comes_back_for_a_request_that_is_not_an_endpoints(tmp_path: Path) -> None:
    """A proxy (JupyterHub's) sends every path on its kept connections: after an endpoint request, the same
    connection's REST or Lab request is the server's again, and its next endpoint request the worker's."""
    gw = GatewayThread(tmp_path, upstream_timeout_s=2, worker=True)
    try:
        dep, key = gw.harness.add(routes.LLAMA_SERVER, gw.address)
        base = f"/modeldeploy/endpoints/{dep.route}"
        plane = gw.harness.gateway.plane
        assert plane is not None
        with RawConnection(gw.harness.port) as conn:
            for round_ in range(3):
                answer = post(conn, base, key, {"nonce": str(round_)})
                assert answer is not None and answer.status == 200
                conn.request("GET", "/api/other", {})
                own = conn.final_response("GET")
                assert own is not None and own.status == 200, own and own.status
                assert json.loads(own.body) == {"served_by": "server", "pid": os.getpid()}
        assert plane.handed_off == 3
        assert [r.status for r in gw.records()] == [200, 200, 200]
    finally:
        gw.close()


def test_a_request_for_a_sleeping_deployment_is_held_while_it_wakes(gw: GatewayThread) -> None:
    """Where the worker serves, it asks the server to wake the deployment and holds the request until the
    published state says it serves; on the loop the server wakes it itself. Either way: one wake, then 200."""
    from jupyter_modeldeploy.supervisor import Status

    dep, key = gw.harness.add(routes.LLAMA_SERVER, gw.address)
    base = f"/modeldeploy/endpoints/{dep.route}"
    gateway = gw.harness.gateway
    wakes: list[float] = []

    async def wake(woken: object) -> None:
        wakes.append(time.monotonic())
        await asyncio.sleep(0.3)  # the engine takes a while to come back
        dep.status = Status.ACTIVE
        gateway.publish()

    gateway.config.wake = wake
    gw.call(lambda: setattr(dep, "status", Status.SLEEPING))
    started = time.monotonic()
    with RawConnection(gw.harness.port) as conn:
        answer = post(conn, base, key, {"nonce": "w"})
        assert answer is not None and answer.status == 200, answer and answer.status
        assert time.monotonic() - started >= 0.3  # held while it woke, not refused
        answer = post(conn, base, key, {"nonce": "x"})
        assert answer is not None and answer.status == 200
    assert len(wakes) == 1


def test_the_servers_record_counts_what_each_replica_was_sent(gw: GatewayThread) -> None:
    """The deployment record's per-replica requests are the server's: exact where the worker sent them too."""
    dep, key = gw.harness.add(routes.LLAMA_SERVER, gw.address)
    base = f"/modeldeploy/endpoints/{dep.route}"
    with RawConnection(gw.harness.port) as conn:
        for n in range(5):
            answer = post(conn, base, key, {"nonce": str(n)})
            assert answer is not None and answer.status == 200
    assert gw.call(lambda: [r.requests for r in dep.replicas]) == [5]
    assert {r.replica for r in gw.records()} == {"local"}
