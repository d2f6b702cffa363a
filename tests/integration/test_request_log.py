"""The request log end to end: each request once, with its key, model, route, status, latency and
tokens; captures off by default, on per deployment with secrets redacted and a size cap; a DataFrame;
replay against the same deployment and another."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator

import httpx
import pytest

from jupyter_modeldeploy.magics import DeployMagic
from tests.support.fake_server import fake_deployment, fake_jupyter
from tests.support.jupyter import JupyterProcess

pytestmark = pytest.mark.integration

FIXED_KEY = "sk-log-fixed-key-0001"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[JupyterProcess, dict, dict]]:
    jupyter = fake_jupyter(tmp_path_factory.mktemp("log"), "--ModelDeployApp.request_log_max_rows=50")
    client = jupyter.client()
    plain = client.wait(client.launch(fake_deployment("log-plain", api_key=FIXED_KEY))["id"], timeout=60)
    captured = client.wait(client.launch(fake_deployment("log-capture", capture_bodies=True, capture_max_bytes=300))["id"],
                           timeout=60)
    yield jupyter, plain, captured
    client.delete(plain["id"])
    client.delete(captured["id"])
    jupyter.stop()


def chat(record: dict, key: str, content: str = "hi", **extra: object) -> httpx.Response:
    body = {"model": record["models"][0]["name"], "messages": [{"role": "user", "content": content}], "max_tokens": 4,
            **extra}
    return httpx.post(record["api_base"] + "/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=30)


def test_each_request_once_and_no_bodies_by_default(server: tuple[JupyterProcess, dict, dict]) -> None:
    jupyter, plain, _ = server
    client = jupyter.client()
    key = client.create_token(deployment=plain["id"], name="logged")
    assert chat(plain, key["token"]).status_code == 200
    assert chat(plain, key["token"], stream=True).status_code == 200
    assert chat(plain, "md-not-a-key").status_code == 401
    rows = client.requests(deployment=plain["name"], bodies=True)
    assert [(r["key_id"], r["status"], r["streamed"]) for r in rows] == [
        ("none", 401, False), (key["id"], 200, True), (key["id"], 200, False),
    ]
    answered = rows[2]
    assert (answered["method"], answered["route"], answered["model"]) == ("POST", "/v1/chat/completions",
                                                                          plain["models"][0]["name"])
    assert (answered["prompt_tokens"], answered["completion_tokens"], answered["key_name"]) == (1, 4, "logged")
    assert answered["latency_ms"] > 0 and rows[1]["first_token_ms"] is not None
    assert all(not r["has_bodies"] and r["request_body"] is None for r in rows)
    frame = client.requests_frame(deployment=plain["id"])
    assert len(frame) == 3 and str(frame["at"].dtype).startswith("datetime64")
    with pytest.raises(Exception, match="not captured"):
        client.replay(answered["id"])


def test_a_request_is_logged_the_moment_its_client_has_the_answer(server: tuple[JupyterProcess, dict, dict]) -> None:
    """The gateway worker sends its records in batches; a REST reader has it send what it holds first (`Sync`), so
    a request whose client had its answer is in the log at once, every time (read well within a batch's wait)."""
    jupyter, plain, _ = server
    client = jupyter.client()
    key = client.create_token(deployment=plain["id"], name="at-once")
    url = urllib.parse.urlsplit(plain["api_base"])
    body = json.dumps({"model": plain["models"][0]["name"], "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 1})
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)  # kept: the worker's
    try:
        for n in range(1, 11):
            connection.request("POST", url.path + "/chat/completions", body,
                               {"Authorization": f"Bearer {key['token']}", "Content-Type": "application/json"})
            answer = connection.getresponse()
            assert answer.status == 200 and answer.read()
            logged = client.requests(key=key["id"], limit=20)
            assert len(logged) == n, f"request {n} was not in the log when its client had the answer"
    finally:
        connection.close()


def test_captures_redact_secrets_cap_size_and_replay(server: tuple[JupyterProcess, dict, dict]) -> None:
    jupyter, plain, captured = server
    client = jupyter.client()
    key = client.create_token(deployment=captured["id"])
    other = client.create_token(project="default")  # any key value pasted into a prompt
    secret_prompt = f"my key is {other['token']}, api_key below"
    answer = chat(captured, key["token"], secret_prompt, api_key="sk-pasted-secret-value", padding="p" * 1000)
    assert answer.status_code == 200
    entry = client.requests(deployment=captured["id"], limit=1)[0]
    assert entry["has_bodies"] and entry["request_body"] is None  # bodies only when asked
    full = client.request_entry(entry["id"])
    assert full["request_body"] is not None and full["response_body"] is not None
    for secret in (key["token"], other["token"], "sk-pasted-secret-value"):
        assert secret not in full["request_body"]
    assert "********" in full["request_body"] and len(full["request_body"].encode()) <= 300
    assert '"object": "chat.completion"' in full["response_body"]

    small = chat(captured, key["token"], "replay me").status_code
    assert small == 200
    logged = client.requests(deployment=captured["id"], limit=1)[0]
    again = client.replay(logged["id"])
    assert again.status_code == 200 and again.json()["usage"]["completion_tokens"] == 4
    elsewhere = DeployMagic(client)(f"replay {logged['id']} to={plain['name']} model={plain['models'][0]['name']}")
    assert elsewhere["usage"]["completion_tokens"] == 4
    routed = client.requests(deployment=plain["id"], limit=1)[0]
    assert routed["status"] == 200 and routed["key_name"] == f"replay of request {logged['id']}"
    assert all(t["revoked_at"] is not None for t in client.tokens() if (t["name"] or "").startswith("replay of"))


def test_the_log_is_bounded_and_its_queries_checked(server: tuple[JupyterProcess, dict, dict]) -> None:
    jupyter, plain, _ = server
    for _ in range(60):
        chat(plain, FIXED_KEY)
    rows = jupyter.client().requests(limit=1000)
    assert len(rows) == 50 and rows[0]["key_id"] == "api-key"
    for params in ({"limit": "0"}, {"limit": "many"}, {"since": "nan"}):
        response = jupyter.api("GET", "requests", params=params)
        assert response.status_code == 400 and list(params)[0] in response.json()["error"]
    assert jupyter.api("GET", "requests/abc").status_code == 404
    assert jupyter.api("GET", "requests/999999").status_code == 404


def test_a_server_that_keeps_no_log_says_so_and_still_counts_usage(tmp_path_factory: pytest.TempPathFactory) -> None:
    jupyter = fake_jupyter(tmp_path_factory.mktemp("nolog"), "--ModelDeployApp.keep_request_log=False")
    try:
        client = jupyter.client()
        record = client.wait(client.launch(fake_deployment("nolog", api_key=FIXED_KEY))["id"], timeout=60)
        assert chat(record, FIXED_KEY).status_code == 200
        answer = jupyter.api("GET", "requests")
        assert answer.status_code == 404 and "keep_request_log" in answer.json()["error"]
        assert jupyter.api("GET", "requests/1").status_code == 404
        usage = jupyter.api("GET", "usage")
        assert usage.status_code == 200, usage.text
    finally:
        jupyter.stop()


def test_each_row_says_how_the_request_came_and_where_it_went(server: tuple[JupyterProcess, dict, dict]) -> None:
    """Through the Jupyter URL, or the gateway worker's own Unix socket (0600) without the Jupyter hop: the
    same admission (a key is needed there too) and the same log, with the door and the replica named."""
    import os
    import stat

    jupyter, plain, _ = server
    client = jupyter.client()
    door = jupyter.state_dir / "gateway.sock"
    assert stat.S_IMODE(os.stat(door).st_mode) == 0o600
    key = client.create_token(deployment=plain["id"], name="doors")
    assert chat(plain, key["token"]).status_code == 200
    path = "/" + plain["api_base"].split("/", 3)[3] + "/chat/completions"
    body = {"model": plain["models"][0]["name"], "messages": [], "max_tokens": 2}
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(door)), base_url="http://gateway", timeout=30) as local:
        assert local.post(path, json=body, headers={"Authorization": f"Bearer {key['token']}"}).status_code == 200
        assert local.post(path, json=body).status_code == 401
        assert local.get("/api/modeldeploy/deployments").status_code == 404  # a door serves endpoints only
    rows = [r for r in client.requests(deployment=plain["name"]) if r["key_id"] in (key["id"], "none")][:3]
    assert [(r["door"], r["status"], r["replica"]) for r in rows] == [
        ("socket", 401, None), ("socket", 200, "local"), ("jupyter", 200, "local")]
