"""Behind a real JupyterHub: a user's endpoint at the hub's public URL, reached with a deployment key
and without the user's hub cookie or token; hub credentials alone get the gateway's 401."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.fake_server import fake_deployment
from tests.support.hub import Hub, chp_program

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    if not chp_program().exists():
        pytest.fail(f"configurable-http-proxy is not installed at {chp_program()}: run 'make hub-proxy'")
    running = Hub(tmp_path_factory.mktemp("hub")).start()
    yield running
    running.stop()


def test_an_endpoint_behind_the_hub_takes_deployment_keys_only(hub: Hub) -> None:
    hub_token = hub.user_server("alice")
    rest = f"{hub.url}/user/alice/api/modeldeploy"
    as_alice = {"Authorization": f"token {hub_token}"}
    launched = httpx.post(f"{rest}/deployments", json=fake_deployment("shared"), headers=as_alice, timeout=60)
    assert launched.status_code == 201, launched.text
    record = launched.json()
    for _ in range(120):
        record = httpx.get(f"{rest}/deployments/{record['id']}", headers=as_alice, timeout=30).json()
        if record["status"] in ("active", "idle"):
            break
        time.sleep(0.5)
    assert record["status"] in ("active", "idle"), record["status_reason"]
    # The record's URLs are the public ones, through the hub's proxy.
    assert record["api_base"] == f"{hub.url}/user/alice/modeldeploy/endpoints/shared/v1"
    assert record["test_command"].count(f"{hub.url}/user/alice/modeldeploy/endpoints/shared/") >= 1

    key = httpx.post(f"{rest}/tokens", json={"deployment": record["id"], "name": "for bob"}, headers=as_alice,
                     timeout=30).json()["token"]
    sdk = openai.OpenAI(base_url=record["api_base"], api_key=key, max_retries=0)
    answer = sdk.chat.completions.create(model=record["models"][0]["name"], messages=[], max_tokens=2)
    assert answer.usage.completion_tokens == 2  # a deployment key, no hub cookie or token

    chat = record["api_base"] + "/chat/completions"
    body = {"model": record["models"][0]["name"], "messages": [], "max_tokens": 1}
    for credentials in ({"Authorization": f"token {hub_token}"}, {"Authorization": f"Bearer {hub_token}"}, {}):
        refused = httpx.post(chat, json=body, headers=credentials, timeout=30)
        assert refused.status_code == 401, (credentials, refused.text)
        assert refused.json()["error"]["type"] == "authentication_error"
        assert hub_token not in refused.text
    # A hub login cookie is no key either.
    login = httpx.Client(base_url=hub.url, follow_redirects=True, timeout=30)
    login.get("/hub/login")
    login.post("/hub/login", data={"username": "alice", "password": "any"},
               headers={"X-XSRFToken": login.cookies.get("_xsrf", "")})
    assert any(name.startswith("jupyterhub") for name in login.cookies), "the hub login gave no cookie"
    assert login.get("/user/alice/api/modeldeploy/deployments").status_code == 200  # the cookie opens the REST API
    assert login.post(chat, json=body).status_code == 401  # but not the endpoint
    httpx.delete(f"{rest}/deployments/{record['id']}", headers=as_alice, timeout=60)
