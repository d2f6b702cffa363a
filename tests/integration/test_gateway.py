"""The gateway against a real llama-server: keys, tokens, limits, streaming, metrics, no leaks."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from jupyter_modeldeploy.client import ModelDeployClient
from tests.integration.test_llamacpp_deployment import wait_status
from tests.support.jupyter import JupyterProcess

pytestmark = pytest.mark.integration

KEY_A = "sk-gateway-key-aaaa-0001"
KEY_B = "sk-gateway-key-bbbb-0002"
MODEL = "SmolLM2-135M-Instruct.Q4_1"


@pytest.fixture(scope="module")
def two_deployments(jupyter_server: JupyterProcess, smollm2_gguf: Path):
    client = jupyter_server.client()
    a = client.launch({"kind": "llamacpp", "name": "gw-a", "model": str(smollm2_gguf), "api_key": KEY_A,
                       "parallel": 1, "max_concurrent_requests": 1, "queue_size": 0, "threads": 2, "ctx_size": 2048,
                       "project": "proj-a", "route": "gw-a"})
    b = client.launch({"kind": "llamacpp", "name": "gw-b", "model": str(smollm2_gguf), "api_key": KEY_B,
                       "threads": 1, "ctx_size": 1024, "project": "proj-b"})
    a = wait_status(client, a["id"], {"active", "idle"})
    b = wait_status(client, b["id"], {"active", "idle"})
    yield a, b
    client.delete(a["id"])
    client.delete(b["id"])


def post(record: dict, path: str, key: str | None, body: object, **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(record["api_base"] + path, json=body, headers=headers, timeout=120, **kwargs)


def chat_body(max_tokens: int = 4, **extra: object) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": max_tokens, **extra}


def test_fixed_route_and_key_checks(two_deployments: tuple[dict, dict]) -> None:
    a, _b = two_deployments
    assert a["api_base"].endswith("/modeldeploy/endpoints/gw-a/v1")
    missing = post(a, "/chat/completions", None, chat_body())
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    assert post(a, "/chat/completions", "sk-wrong", chat_body()).status_code == 401
    other = post(a, "/chat/completions", KEY_B, chat_body())
    assert other.status_code == 403 and "not valid for this deployment" in other.json()["error"]["message"]
    assert post(a, "/chat/completions", KEY_A, chat_body()).status_code == 200
    via_header = httpx.post(a["api_base"] + "/chat/completions", json=chat_body(), headers={"x-api-key": KEY_A},
                            timeout=120)
    assert via_header.status_code == 200
    unknown = httpx.get(a["api_base"].replace("/gw-a/", "/no-such-route/") + "/models")
    assert unknown.status_code == 404 and "no deployment" in unknown.json()["error"]["message"]


def test_tokens_scoped_expiring_and_revoked_at_once(jupyter_server: JupyterProcess, two_deployments: tuple[dict, dict]) -> None:
    a, b = two_deployments
    client = jupyter_server.client()
    scoped = client.create_token(deployment=a["id"])
    project = client.create_token(project="proj-b")
    short = client.create_token(deployment=a["id"], expires_in_s=1)
    assert scoped["token"].startswith("md-") and "hash" not in scoped
    assert post(a, "/chat/completions", scoped["token"], chat_body()).status_code == 200
    assert post(b, "/chat/completions", scoped["token"], chat_body()).status_code == 403
    assert post(b, "/chat/completions", project["token"], chat_body()).status_code == 200
    assert post(a, "/chat/completions", project["token"], chat_body()).status_code == 403
    listed = client.tokens()
    assert all("token" not in t for t in listed) and {scoped["id"], project["id"]} <= {t["id"] for t in listed}
    client.revoke_token(scoped["id"])
    assert post(a, "/chat/completions", scoped["token"], chat_body()).status_code == 401
    time.sleep(1.2)
    assert post(a, "/chat/completions", short["token"], chat_body()).status_code == 401


def test_payload_limit_413_and_server_keeps_serving(two_deployments: tuple[dict, dict]) -> None:
    a, _ = two_deployments
    too_big = chat_body(extra_padding="x" * 300_000)
    response = post(a, "/chat/completions", KEY_A, too_big)
    assert response.status_code == 413 and "exceeds the limit" in response.json()["error"]["message"]
    assert post(a, "/chat/completions", KEY_A, chat_body()).status_code == 200


def test_concurrency_limit_429_at_once(jupyter_server: JupyterProcess, two_deployments: tuple[dict, dict]) -> None:
    """Without a queue (queue_size 0), a request past max_concurrent_requests is refused at once."""
    a, _ = two_deployments
    results: list[int] = []
    slow = threading.Thread(
        target=lambda: results.append(post(a, "/completions", KEY_A, {"model": MODEL, "prompt": "Tell a story",
                                                                         "max_tokens": 300, "ignore_eos": True}).status_code)
    )
    slow.start()
    client = jupyter_server.client()
    deadline = time.monotonic() + 30
    while client.get(a["id"])["requests_in_flight"] < 1:
        assert time.monotonic() < deadline and slow.is_alive(), "the slow request never got in flight"
        time.sleep(0.02)
    refused = post(a, "/completions", KEY_A, {"model": MODEL, "prompt": "x", "max_tokens": 1})
    answered_while_busy = slow.is_alive()
    slow.join()
    assert refused.status_code == 429, refused.text
    assert "max_concurrent_requests=1" in refused.json()["error"]["message"]
    assert answered_while_busy, "the 429 must come at once, not after waiting for the slot"
    assert results == [200]


def test_streaming_chunks_arrive_before_the_end_with_usage(jupyter_server: JupyterProcess,
                                                            two_deployments: tuple[dict, dict]) -> None:
    a, _ = two_deployments
    arrivals: list[float] = []
    events: list[dict] = []
    started = time.monotonic()
    with httpx.stream("POST", a["api_base"] + "/chat/completions", headers={"Authorization": f"Bearer {KEY_A}"},
                      json=chat_body(60, stream=True, ignore_eos=True), timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                arrivals.append(time.monotonic() - started)
                events.append(json.loads(line[6:]))
    assert len(arrivals) >= 10
    # A buffering proxy delivers every event at once at the end; here they trickle in.
    assert arrivals[-1] - arrivals[0] > 0.05, arrivals
    # The gateway asked the engine for usage itself and did not pass the usage-only event on.
    assert all(e.get("choices") for e in events)
    oai = openai.OpenAI(base_url=a["api_base"], api_key=KEY_A, max_retries=0)
    stream = oai.chat.completions.create(**chat_body(5), stream=True, stream_options={"include_usage": True})
    usage = [c.usage for c in stream if c.usage]
    assert usage and usage[-1].completion_tokens == 5


def test_client_disconnect_frees_the_engine_slot(jupyter_server: JupyterProcess,
                                                two_deployments: tuple[dict, dict]) -> None:
    a, _ = two_deployments
    headers = {"Authorization": f"Bearer {KEY_A}"}
    with httpx.stream("POST", a["api_base"] + "/completions", headers=headers, timeout=120,
                      json={"model": MODEL, "prompt": "Once", "max_tokens": 2000, "ignore_eos": True, "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                break
    # /slots is closed to deployment keys: ask the engine itself, on its socket, with its own key.
    work = jupyter_server.state_dir / "deployments" / a["id"]
    engine = httpx.Client(transport=httpx.HTTPTransport(uds=str(work / "engine.sock")), timeout=10,
                          headers={"Authorization": f"Bearer {(work / 'engine.key').read_text().strip()}"})
    deadline = time.monotonic() + 20
    busy = True
    while time.monotonic() < deadline:
        slots = engine.get("http://engine/slots").json()
        busy = any(s.get("is_processing") for s in slots)
        if not busy:
            break
        time.sleep(0.2)
    assert not busy, "the engine kept generating for a client that left"
    assert post(a, "/completions", KEY_A, {"model": MODEL, "prompt": "x", "max_tokens": 1}).status_code == 200


def test_metrics_series_and_prometheus_count_requests_exactly(jupyter_server: JupyterProcess, smollm2_gguf: Path) -> None:
    client = jupyter_server.client()
    record = client.launch({"kind": "llamacpp", "name": "gw-metrics", "model": str(smollm2_gguf), "api_key": KEY_A,
                            "route": "gw-metrics", "threads": 1, "ctx_size": 1024})
    record = wait_status(client, record["id"], {"active", "idle"})
    try:
        oai = openai.OpenAI(base_url=record["api_base"], api_key=KEY_A, max_retries=0)
        completion_tokens = 0
        for _ in range(3):
            out = oai.chat.completions.create(**chat_body(3))
            completion_tokens += out.usage.completion_tokens
        stream = oai.chat.completions.create(**chat_body(4), stream=True)
        assert sum(1 for c in stream if c.choices) >= 1
        completion_tokens += 4
        assert post(record, "/chat/completions", "sk-wrong", chat_body()).status_code == 401
        deadline = time.monotonic() + 30
        while True:
            metrics = client.metrics(record["id"])
            if metrics["t"] and sum(v or 0 for v in metrics["series"].get("requests_per_s", [])) > 0:
                break
            assert time.monotonic() < deadline, "no series row with the requests"
            time.sleep(0.5)
        totals = metrics["totals"]
        assert totals["requests"] == 5 and totals["by_status"] == {"200": 4, "401": 1}
        assert totals["completion_tokens"] == completion_tokens
        assert totals["prompt_tokens"] > 0
        assert any(v for v in metrics["series"]["process_rss_bytes"] if v)
        host = client.host_metrics()
        assert host["t"] and "cpu_percent" in host["series"] and isinstance(host["gpus"], list)
        text = jupyter_server.api("GET", "metrics").text
        labels = f'deployment="gw-metrics",deployment_id="{record["id"]}",model="{MODEL}"'
        assert f'modeldeploy_requests_total{{code="200",{labels}}} 4.0' in text, text[:2000]
        assert f"modeldeploy_completion_tokens_total{{{labels}}} {float(completion_tokens)}" in text
        assert "modeldeploy_host_cpu_util_percent" in text
        since = metrics["t"][-1]
        assert client.metrics(record["id"], since=since)["t"] == []
    finally:
        client.delete(record["id"])


def test_no_secret_in_logs_exports_or_errors(jupyter_server: JupyterProcess, two_deployments: tuple[dict, dict],
                                             tmp_path: Path) -> None:
    a, b = two_deployments
    client: ModelDeployClient = jupyter_server.client()
    token = client.create_token(deployment=a["id"])["token"]
    secrets = [KEY_A, KEY_B, token, "hf_grep_test_secret_77"]
    post(a, "/chat/completions", token, chat_body())
    post(b, "/chat/completions", token, chat_body())
    bad = client.launch({"kind": "llamacpp", "name": "gw-leak", "model": "/missing.gguf", "hf_token": secrets[3],
                         "api_key": "sk-gateway-leak-check-3"}, start=True)
    secrets.append("sk-gateway-leak-check-3")
    wait_status(client, bad["id"], {"failed"})
    texts = [
        json.dumps(client.list()), json.dumps(client.export(a["id"])), json.dumps(client.export(bad["id"])),
        "\n".join(client.logs(a["id"], tail=5000)), "\n".join(client.logs(bad["id"], tail=5000)),
        jupyter_server.log_path.read_text(errors="replace"),
        post(a, "/chat/completions", "sk-wrong-" + KEY_A, chat_body()).text,
        jupyter_server.api("POST", "deployments", json={"kind": "llamacpp", "name": "x", "model": "m",
                                                        "api_key": secrets[4], "hf_token": secrets[3], "top_k": -5}).text,
    ]
    for path in jupyter_server.state_dir.rglob("*.log"):
        texts.append(path.read_text(errors="replace"))
    for text in texts:
        for secret in secrets:
            assert secret not in text
    client.delete(bad["id"])


def test_slow_engine_gets_504_not_a_hung_client(smollm2_gguf: Path, tmp_path: Path) -> None:
    server = JupyterProcess(tmp_path / "jupyter-timeout", extra_args=["--ModelDeployApp.upstream_timeout_s=1"]).start()
    try:
        client = server.client()
        record = client.launch({"kind": "llamacpp", "name": "slow", "model": str(smollm2_gguf), "api_key": KEY_A,
                                "threads": 1, "parallel": 1})
        record = wait_status(client, record["id"], {"active", "idle"})
        slow = post(record, "/completions", KEY_A, {"model": MODEL, "prompt": "Write", "max_tokens": 400,
                                                    "ignore_eos": True})
        assert slow.status_code == 504, slow.text
        assert slow.json()["error"]["type"] == "timeout_error"
        # The engine is free again and quick requests still pass.
        deadline = time.monotonic() + 60
        while post(record, "/completions", KEY_A, {"model": MODEL, "prompt": "x", "max_tokens": 1}).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        client.delete(record["id"])
    finally:
        server.stop()


def test_usage_per_key_equals_the_engines_usage_streamed_and_not(jupyter_server: JupyterProcess,
                                                                  two_deployments: tuple[dict, dict]) -> None:
    a, _ = two_deployments
    client = jupyter_server.client()
    key = client.create_token(deployment=a["id"], name="usage check")
    sdk = openai.OpenAI(base_url=a["api_base"], api_key=key["token"], max_retries=0)
    prompt = completion = 0
    for max_tokens in (3, 6):
        answer = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Count"}],
                                             max_tokens=max_tokens)
        prompt += answer.usage.prompt_tokens
        completion += answer.usage.completion_tokens
        stream = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello"}],
                                             max_tokens=max_tokens, stream=True, stream_options={"include_usage": True})
        final = [chunk.usage for chunk in stream if chunk.usage is not None]
        assert len(final) == 1
        prompt += final[0].prompt_tokens
        completion += final[0].completion_tokens
    rows = client.usage(key=key["id"])
    assert sum(r["requests"] for r in rows) == 4 and sum(r["errors"] for r in rows) == 0
    assert (sum(r["prompt_tokens"] for r in rows), sum(r["completion_tokens"] for r in rows)) == (prompt, completion)
    assert {r["model"] for r in rows} == {MODEL}
