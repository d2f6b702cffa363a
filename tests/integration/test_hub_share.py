"""Sharing a deployment on a real JupyterHub: teammates get their own keys through the Hub's login.

alice shares a deployment with bob (by name) and with the group ml-team (carol); dave is in neither.
Each logs in to the Hub (the dummy authenticator) and opens the share page of the share service
(`jupyter_modeldeploy.hub_share`, configured with its `share_service_config` as an admin would); the
page goes through the Hub's OAuth and asks alice's server for a key. Keys carry the share's priority
and quotas, are attributed to the Hub user in alice's key list and usage, and end when alice unshares
(at once) or when someone leaves the group (the service's check, every 2 s here; within a minute by
default). Only the share service may call the /hub-share routes. bob's page is also driven in Chromium.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, wait_until
from tests.support.fake_server import fake_deployment
from tests.support.hub import Hub, chp_program
from tests.support.jupyter import free_port

pytestmark = pytest.mark.integration

CHECK_EVERY_S = 2
SERVICE = "modeldeploy-share"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    if not chp_program().exists():
        pytest.fail(f"configurable-http-proxy is not installed at {chp_program()}: run 'make hub-proxy'")
    folder = tmp_path_factory.mktemp("hub-share")
    running = Hub(folder, config_lines=(
        "from jupyter_modeldeploy.hub_share.hub_config import share_service_config",
        f"share_service_config(c, port={free_port()}, proxy_url=f'http://127.0.0.1:{{c.JupyterHub.port}}', "
        f"check_every_s={CHECK_EVERY_S})",
    ))
    running.start()
    for name in ("bob", "carol", "dave"):
        running.api("POST", f"users/{name}").raise_for_status()
    running.api("POST", "groups/ml-team").raise_for_status()
    running.api("POST", "groups/ml-team/users", json={"users": ["carol"]}).raise_for_status()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def alice(hub: Hub) -> Iterator[dict[str, Any]]:
    """alice's shared deployment: its record, her REST base and headers."""
    headers = {"Authorization": f"token {hub.user_server('alice')}"}
    rest = f"{hub.url}/user/alice/api/modeldeploy"
    share = {"users": ["bob"], "groups": ["ml-team"], "priority": "batch", "quotas": {"requests_per_minute": 50}}
    launched = httpx.post(f"{rest}/deployments", json=fake_deployment("team-model", share_with=share), headers=headers,
                          timeout=60)
    assert launched.status_code == 201, launched.text
    record = wait_until(lambda: _serving(rest, launched.json()["id"], headers), 120, "the deployment never served")
    yield {"record": record, "rest": rest, "headers": headers}


def _serving(rest: str, dep_id: str, headers: dict[str, str]) -> dict[str, Any] | None:
    record = httpx.get(f"{rest}/deployments/{dep_id}", headers=headers, timeout=30).json()
    return record if record["status"] in ("active", "idle") else None


def logged_in(hub: Hub, name: str) -> httpx.Client:
    """A browser-like client with `name`'s Hub login cookie."""
    client = httpx.Client(base_url=hub.url, follow_redirects=True, timeout=60)
    client.get("/hub/login")
    answer = client.post("/hub/login", data={"username": name, "password": "any"},
                         headers={"X-XSRFToken": client.cookies.get("_xsrf", "")})
    assert answer.status_code == 200, answer.text
    return client


def share_page(hub: Hub) -> str:
    return f"/services/{SERVICE}/alice/team-model"


def get_key(hub: Hub, client: httpx.Client) -> str:
    """Open the share page (through the Hub's OAuth) and press the button; the key from the page."""
    page = client.get(share_page(hub))
    assert page.status_code == 200, page.text
    xsrf = re.search(r"name=\"_xsrf\" value=\"([^\"]+)\"", page.text)
    assert xsrf, page.text
    answer = client.post(share_page(hub), data={"_xsrf": xsrf.group(1)})
    assert answer.status_code == 200, answer.text
    found = re.search(r"id='key'>([^<]+)<", answer.text)
    assert found, answer.text
    return found.group(1)


def chat(record: dict[str, Any], key: str) -> int:
    """The status of one chat request with `key`."""
    body = {"model": record["models"][0]["name"], "messages": [], "max_tokens": 1}
    return httpx.post(record["api_base"] + "/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=30).status_code


def test_a_teammate_named_in_the_share_gets_a_key_of_their_own(hub: Hub, alice: dict[str, Any]) -> None:
    record = alice["record"]
    bob = logged_in(hub, "bob")
    page = bob.get(share_page(hub))
    assert page.status_code == 200 and "team-model, shared by alice" in page.text
    assert record["api_base"] in page.text and "batch" in page.text and "requests per minute: 50" in page.text
    key = get_key(hub, bob)
    sdk = openai.OpenAI(base_url=record["api_base"], api_key=key, max_retries=0)
    assert sdk.chat.completions.create(model=record["models"][0]["name"], messages=[], max_tokens=2).usage
    keys = httpx.get(f"{alice['rest']}/tokens", headers=alice["headers"], timeout=30).json()["tokens"]
    bobs = [k for k in keys if k["hub_user"] == "bob" and k["revoked_at"] is None]
    assert len(bobs) == 1 and bobs[0]["priority"] == "batch" and bobs[0]["quotas"]["requests_per_minute"] == 50
    usage = wait_until(lambda: [r for r in httpx.get(f"{alice['rest']}/usage", headers=alice["headers"],
                                                     timeout=30).json()["rows"] if r["hub_user"] == "bob"],
                       30, "bob's request never showed in alice's usage")
    assert usage[0]["key_id"] == bobs[0]["id"] and usage[0]["requests"] >= 1
    log = httpx.get(f"{alice['rest']}/requests", headers=alice["headers"], timeout=30).json()["requests"]
    assert any(e["hub_user"] == "bob" for e in log)

    again = get_key(hub, bob)  # a new key replaces the old one
    assert chat(record, key) == 401 and chat(record, again) == 200


def test_someone_the_share_does_not_name_gets_no_key(hub: Hub, alice: dict[str, Any]) -> None:
    dave = logged_in(hub, "dave")
    page = dave.get(share_page(hub))
    assert page.status_code == 403 and "does not share" in page.text
    xsrf = next(c.value for c in dave.cookies.jar if c.name == "_xsrf" and c.path.startswith(f"/services/{SERVICE}"))
    refused = dave.post(share_page(hub), data={"_xsrf": xsrf})
    assert refused.status_code == 403 and "does not share" in refused.text and "id='key'" not in refused.text
    assert not [k for k in httpx.get(f"{alice['rest']}/tokens", headers=alice["headers"], timeout=30).json()["tokens"]
                if k["hub_user"] == "dave"]


def test_only_the_share_service_may_mint_a_shared_key(hub: Hub, alice: dict[str, Any]) -> None:
    body = {"user": "dave", "groups": ["ml-team"], "deployment": "team-model"}
    for headers in (alice["headers"], {"Authorization": f"token {hub.user_token('alice')}"},
                    {"Authorization": f"token {hub.service_token}"}):
        answer = httpx.post(f"{alice['rest']}/hub-share/keys", json=body, headers=headers, timeout=30)
        assert answer.status_code == 403, answer.text
        assert SERVICE in answer.json()["error"] and "token" not in answer.json()


def test_leaving_the_group_revokes_the_key_within_the_check(hub: Hub, alice: dict[str, Any]) -> None:
    record = alice["record"]
    key = get_key(hub, logged_in(hub, "carol"))
    assert chat(record, key) == 200
    hub.api("DELETE", "groups/ml-team/users", json={"users": ["carol"]}).raise_for_status()
    left = time.monotonic()
    wait_until(lambda: chat(record, key) == 401, 60, "carol's key still works a minute after she left the group")
    assert time.monotonic() - left < 60
    page = logged_in(hub, "carol").get(share_page(hub))
    assert page.status_code == 403


def test_unsharing_revokes_at_once(hub: Hub, alice: dict[str, Any]) -> None:
    record = alice["record"]
    key = get_key(hub, logged_in(hub, "bob"))
    assert chat(record, key) == 200
    changed = httpx.put(f"{alice['rest']}/deployments/{record['id']}/share", json={"groups": ["ml-team"]},
                        headers=alice["headers"], timeout=30)
    assert changed.status_code == 200, changed.text
    assert [k["hub_user"] for k in changed.json()["revoked"]] == ["bob"]
    assert chat(record, key) == 401
    state = httpx.get(f"{alice['rest']}/deployments/{record['id']}/share", headers=alice["headers"], timeout=30).json()
    assert state["hub"] is True and state["share_url"].endswith(share_page(hub))
    assert all(k["hub_user"] != "bob" for k in state["holders"])
    httpx.put(f"{alice['rest']}/deployments/{record['id']}/share", json={"users": ["bob"], "groups": ["ml-team"]},
              headers=alice["headers"], timeout=30).raise_for_status()


def test_the_share_page_in_a_browser(hub: Hub, alice: dict[str, Any], artifacts_dir: Any) -> None:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.set_default_timeout(30_000)
        page.goto(f"{hub.url}/hub/login")
        page.fill("input[name=username]", "bob")
        page.fill("input[name=password]", "any")
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_url(re.compile(r".*/(hub/home|hub/spawn|user/bob).*"))
        page.goto(hub.url + share_page(hub))
        page.wait_for_selector("#get-key")
        page.screenshot(path=str(artifacts_dir / "hub-share-page.png"), full_page=True)
        page.click("#get-key")
        key = page.wait_for_selector("#key").inner_text().strip()
        page.screenshot(path=str(artifacts_dir / "hub-share-key.png"), full_page=True)
        browser.close()
    assert chat(alice["record"], key) == 200


def test_the_index_lists_what_is_shared_with_you(hub: Hub, alice: dict[str, Any]) -> None:
    bob = logged_in(hub, "bob")
    index = bob.get(f"/services/{SERVICE}/")
    assert index.status_code == 200 and "Shared with you" in index.text
    assert f"href='/services/{SERVICE}/alice/team-model'" in index.text
    dave = logged_in(hub, "dave").get(f"/services/{SERVICE}/")
    assert dave.status_code == 200 and "Nothing is shared with dave" in dave.text


def test_a_stopped_owner_server_is_said_so_and_comes_back(hub: Hub, alice: dict[str, Any]) -> None:
    """Last: it stops alice's server."""
    assert hub.api("DELETE", "users/alice/server").status_code in (202, 204)
    wait_until(lambda: not hub.server_of("alice"), 60, "alice's server did not stop")
    page = logged_in(hub, "bob").get(share_page(hub))
    assert page.status_code == 503 and "not running" in page.text
