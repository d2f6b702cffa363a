"""The gateway's promises against the real llama-server, through a real Jupyter server.

The stream through the gateway is the stream direct, event for event; control routes stay
closed; the engine listens where only the server can reach it; a hung engine is noticed;
many streaming clients get no 5xx from the pool; `Expect: 100-continue` gives no cross-talk.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from tests.integration.test_llamacpp_deployment import API_KEY, launch, wait_status
from tests.support.jupyter import JupyterProcess
from tests.support.raw_http import RawConnection

pytestmark = pytest.mark.integration

MODEL = "SmolLM2-135M-Instruct.Q4_1"


@pytest.fixture(scope="module")
def served(jupyter_server: JupyterProcess, smollm2_gguf: Path):
    client = jupyter_server.client()
    record = launch(client, smollm2_gguf, "gw-engine", parallel=4, route="gw-engine")
    record = wait_status(client, record["id"], {"active", "idle"})
    yield record
    client.delete(record["id"])


def engine_of(jupyter_server: JupyterProcess, record: dict) -> tuple[psutil.Process, Path, str]:
    """The llama-server process, its socket and private key (what only the server knows)."""
    reaper = psutil.Process(record["pid"])
    engine = next(p for p in reaper.children(recursive=True) if "llama-server" in p.name())
    work = jupyter_server.state_dir / "deployments" / record["id"]
    return engine, work / "engine.sock", (work / "engine.key").read_text().strip()


def sse_events(body: bytes) -> list[dict]:
    events = []
    for block in body.split(b"\n\n"):
        for line in block.splitlines():
            if line.startswith(b"data: ") and line[6:] != b"[DONE]":
                events.append(json.loads(line[6:]))
    return events


def shape(event: dict) -> dict:
    """An event without what differs between two runs of the same request: ids, times, and how
    much of the prompt the engine's cache held (the prompt's size is kept)."""
    volatile = {"id", "created", "timings", "system_fingerprint"}
    out = {k: shape(v) if isinstance(v, dict) else v for k, v in event.items() if k not in volatile}
    if "cache_read_input_tokens" in event:
        out.pop("cache_read_input_tokens")
        out["input_tokens"] = event.get("input_tokens", 0) + event["cache_read_input_tokens"]
    return out


def test_a_stream_through_the_gateway_is_the_stream_direct(jupyter_server: JupyterProcess, served: dict) -> None:
    _engine, sock, engine_key = engine_of(jupyter_server, served)
    for path, body in (
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "Count to five"}],
                                  "max_tokens": 12, "temperature": 0, "seed": 1, "stream": True,
                                  "cache_prompt": False}),
        ("/v1/messages", {"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8,
                          "temperature": 0, "stream": True, "cache_prompt": False}),
    ):
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), timeout=120) as direct:
            raw_direct = direct.post("http://engine" + path, json=body,
                                     headers={"Authorization": f"Bearer {engine_key}"}).content
        via = httpx.post(served["api_base"].removesuffix("/v1") + path, json=body,
                         headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120)
        assert via.status_code == 200
        direct_events, gateway_events = sse_events(raw_direct), sse_events(via.content)
        assert [shape(e) for e in gateway_events] == [shape(e) for e in direct_events], path
        assert [sorted(e) for e in gateway_events] == [sorted(e) for e in direct_events], path  # timings kept
    types = [e.get("type") for e in gateway_events]
    assert "message_delta" in types  # Anthropic's stop reason and output usage reach the client


def test_stream_usage_counted_exactly_from_the_engine(jupyter_server: JupyterProcess, served: dict) -> None:
    """No usage request is added for llama-server: its final `timings` give the counts."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 9,
            "temperature": 0, "seed": 3}
    auth = {"Authorization": f"Bearer {API_KEY}"}
    plain = httpx.post(served["api_base"] + "/chat/completions", json=body, headers=auth, timeout=120).json()["usage"]

    def totals() -> dict:
        return jupyter_server.api("GET", f"deployments/{served['id']}/metrics").json()["models"][MODEL]

    time.sleep(0.5)
    before = totals()
    streamed = httpx.post(served["api_base"] + "/chat/completions", json={**body, "stream": True}, headers=auth,
                          timeout=120)
    assert streamed.status_code == 200 and b'"usage"' not in streamed.content  # the client did not ask for it
    deadline = time.monotonic() + 10
    while (after := totals())["requests"] == before["requests"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert after["completion_tokens"] - before["completion_tokens"] == plain["completion_tokens"]
    assert after["prompt_tokens"] - before["prompt_tokens"] == plain["prompt_tokens"]


def test_control_routes_are_closed_and_props_is_read_only(served: dict) -> None:
    base = served["api_base"].removesuffix("/v1")
    auth = {"Authorization": f"Bearer {API_KEY}"}
    assert httpx.get(base + "/slots", headers=auth).status_code == 404
    assert httpx.post(base + "/slots/0?action=erase", headers=auth).status_code == 404
    assert httpx.post(base + "/props", json={"n_parallel": 1}, headers=auth).status_code == 405
    assert httpx.get(base + "/lora-adapters", headers=auth).status_code == 404
    # /metrics is the gateway's own view of this deployment (scoped keys may read it), never the engine's.
    metrics = httpx.get(base + "/metrics", headers=auth)
    assert metrics.status_code == 200 and "llamacpp:" not in metrics.text and "modeldeploy_" in metrics.text
    assert httpx.get(base + "/props%3F", headers=auth).status_code == 400
    props = httpx.get(base + "/props", headers=auth)
    assert props.status_code == 200 and "default_generation_settings" in props.json()
    health = httpx.get(base + "/health")  # no key: the deployment's state only
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert set(health.json()) == {"status", "state"}


def test_the_engine_listens_only_where_the_server_can_connect(jupyter_server: JupyterProcess, served: dict) -> None:
    engine, sock, _key = engine_of(jupyter_server, served)
    tcp = [c for c in engine.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert tcp == [], tcp
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700


def test_expect_100_continue_with_two_keys_on_the_real_engine(jupyter_server: JupyterProcess, served: dict) -> None:
    token = jupyter_server.client().create_token(deployment=served["id"])["token"]
    path = urlsplit(served["api_base"]).path + "/chat/completions"
    port = urlsplit(served["api_base"]).port
    assert port is not None
    for _ in range(3):
        with RawConnection(port) as a, RawConnection(port) as b:
            body = json.dumps({"model": MODEL, "max_tokens": 3, "pad": "x" * (1 << 17),
                               "messages": [{"role": "user", "content": "A"}]}).encode()
            a.request("POST", path, {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json",
                                     "Expect": "100-continue"}, body, send_body=False)
            first = a.read_response()
            assert first is not None and first.status == 100
            a.send(body)
            answer_a = a.final_response()
            b.request("POST", path, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                      json.dumps({"model": MODEL, "max_tokens": 3, "messages": [{"role": "user", "content": "B"}]}).encode())
            answer_b = b.final_response()
            assert answer_a is not None and answer_a.status == 200 and answer_a.json()["object"] == "chat.completion"
            assert answer_b is not None and answer_b.status == 200
            assert answer_a.json()["id"] != answer_b.json()["id"]


def test_sixteen_streaming_clients_get_no_5xx(served: dict) -> None:
    statuses: list[int] = []
    lock = threading.Lock()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell a story"}], "max_tokens": 6, "stream": True}

    def client_loop() -> None:
        with httpx.Client(timeout=120) as http:
            for _ in range(6):
                with http.stream("POST", served["api_base"] + "/chat/completions", json=body,
                                 headers={"Authorization": f"Bearer {API_KEY}"}) as response:
                    received = sum(len(chunk) for chunk in response.iter_bytes())
                with lock:
                    statuses.append(response.status_code if received else 0)
                time.sleep(0.05)

    threads = [threading.Thread(target=client_loop) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(statuses) == 96
    assert [s for s in statuses if s >= 500] == []
    assert set(statuses) <= {200, 429}


def test_a_hung_engine_is_noticed_and_recovers(jupyter_server: JupyterProcess, smollm2_gguf: Path) -> None:
    client = jupyter_server.client()
    record = launch(client, smollm2_gguf, "gw-hang")
    record = wait_status(client, record["id"], {"active", "idle"})
    engine, _sock, _key = engine_of(jupyter_server, record)
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    try:
        os.kill(engine.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        unhealthy = wait_status(client, record["id"], {"unhealthy"}, timeout=15)
        assert time.monotonic() - stopped_at <= 10.5, "not noticed within 10 s"
        assert "health checks" in unhealthy["status_reason"]
        asked = time.monotonic()
        refused = httpx.post(record["api_base"] + "/chat/completions", json=chat,
                             headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
        assert refused.status_code == 503 and time.monotonic() - asked < 2
        assert httpx.get(record["api_base"].removesuffix("/v1") + "/health").status_code == 503
    finally:
        os.kill(engine.pid, signal.SIGCONT)
    wait_status(client, record["id"], {"active", "idle"}, timeout=20)
    answer = httpx.post(record["api_base"] + "/chat/completions", json=chat,
                        headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    assert answer.status_code == 200
    client.delete(record["id"])


def test_anonymous_huge_bodies_are_refused_without_being_buffered(jupyter_server: JupyterProcess, served: dict) -> None:
    """Four anonymous 64 MiB POSTs: 401 from the headers, and the server does not hold the bodies."""
    server = psutil.Process(jupyter_server.pid)
    path = urlsplit(served["api_base"]).path + "/chat/completions"
    port = urlsplit(served["api_base"]).port
    assert port is not None
    before = server.memory_info().rss
    statuses: list[int] = []

    def flood() -> None:
        with RawConnection(port, timeout=30) as conn:
            conn.request("POST", path, {"Content-Type": "application/json", "Content-Length": str(64 << 20)},
                         send_body=False)
            try:
                for _ in range(64):
                    conn.send(b"x" * (1 << 20))
            except OSError:
                pass  # the server answered and closed: the rest of the body is never read
            answer = conn.final_response()
            statuses.append(answer.status if answer is not None else 0)

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    grown = (server.memory_info().rss - before) / (1 << 20)
    assert set(statuses) <= {401, 0} and 401 in statuses
    assert grown < 32, f"the server grew by {grown:.0f} MiB"


def test_metric_labels_stay_bounded_under_junk_model_names(jupyter_server: JupyterProcess, served: dict) -> None:
    def exposition() -> int:
        return len(jupyter_server.api("GET", "metrics").content)

    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    for i in range(5):  # the "other" label exists from here on
        httpx.post(served["api_base"] + "/chat/completions", json={**body, "model": f"{i}" + "z" * 4096},
                   headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    size = exposition()
    for i in range(60):
        response = httpx.post(served["api_base"] + "/chat/completions", json={**body, "model": f"{i}" + "y" * 4096},
                              headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
        assert response.status_code == 200
    assert exposition() - size < 2000  # counters grew, no new series (a series per name was > 4 KiB each)
    assert "y" * 100 not in jupyter_server.api("GET", "metrics").text
