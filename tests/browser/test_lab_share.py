"""The Share dialog of the JupyterLab panel, in real Chromium against a real `jupyter lab`.

Two servers, each with a deployment served by the fake engine (tests/support/fake_server.py):

- one outside a JupyterHub: the dialog says there is no share page and keys come from the API
  tokens section; the settings typed (users, a group, a model, batch priority, a quota) are saved
  and read back through REST; a bad user name is refused with the field named, the inputs kept
  and the stored settings unchanged;
- one started as a Hub's single-user server would be (JUPYTERHUB_USER=alice and a Hub API URL that
  nothing calls: the server only builds the share page's address from them): the dialog shows the
  share page's address with a Copy button, and the keys teammates got there. Those keys are written
  into the server's store while it is down, as the share desk mints them (getting them through a
  real Hub is tests/integration's business); one is revoked from the list, the other by a save that
  no longer names its holder ("Revoked: bob's key"), and the key list shows a "Hub: bob" badge.

Screenshots go to tests/artifacts/lab-share-*.png. The tests run in file order and share a browser.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_modeldeploy.gateway.tokens import TokenRegistry
from jupyter_modeldeploy.supervisor.store import Store
from tests.browser.test_lab_panel import PANEL, item, open_panel, wait_status
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, lab_with_this_build, wait_until
from tests.support.fake_server import fake_deployment, fake_llama_server
from tests.support.jupyter import JupyterProcess

pytestmark = [pytest.mark.browser, pytest.mark.integration]

DIALOG = ".jp-Dialog"
SHARE = f"{DIALOG} .jp-ModelDeploy-share"
TOKENS = f"{PANEL} .jp-ModelDeploy-tokens"
NAME = "team-chat"
HUB_ENV = {"JUPYTERHUB_USER": "alice", "JUPYTERHUB_API_URL": "http://127.0.0.1:9/hub/api"}


def start_lab(home: Path, env: dict[str, str] | None = None) -> JupyterProcess:
    """A `jupyter lab` serving llamacpp deployments with the fake engine, this checkout's extension built in."""
    program = fake_llama_server(home / "bin")
    server = lab_with_this_build(home, [f"--ModelDeployApp.llamacpp_server={program}",
                                        "--ModelDeployApp.llamacpp_engine=llama-server"])
    server.extra_env.update(env or {})
    return server.start()


def remove_all(server: JupyterProcess) -> None:
    for record in server.api("GET", "deployments").json()["deployments"]:
        server.api("DELETE", f"deployments/{record['id']}")
    server.stop()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProcess]:
    """A Lab outside a JupyterHub."""
    server = start_lab(tmp_path_factory.mktemp("lab-share"))
    try:
        yield server
    finally:
        remove_all(server)


@pytest.fixture(scope="module")
def deployment(lab: JupyterProcess) -> dict[str, Any]:
    client = lab.client()
    return client.wait(client.launch(fake_deployment(NAME))["id"], timeout=60)


@pytest.fixture(scope="module")
def hub_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[JupyterProcess, dict[str, Any]]]:
    """A Lab as alice's single-user server under a Hub, its deployment shared with bob and the group ml-team,
    and keys bob and dave (a member of ml-team) got on the share page."""
    server = start_lab(tmp_path_factory.mktemp("lab-share-hub"), HUB_ENV)
    try:
        client = server.client()
        record = client.wait(client.launch(fake_deployment(NAME))["id"], timeout=60)
        shared = server.api("PUT", f"deployments/{record['id']}/share", json={"users": ["bob"], "groups": ["ml-team"]})
        assert shared.status_code == 200, shared.text
        server.stop()
        # The keys the share desk would mint for them (ShareDesk.mint), written while the server is down.
        store = Store(server.state_dir / "deployments.sqlite")
        tokens = TokenRegistry(store)
        for user, groups in (("bob", []), ("dave", ["ml-team"])):
            tokens.create(deployment_id=record["id"], name=user, hub_user=user, hub_groups=groups)
        store.close()
        server.start()
        yield server, record
    finally:
        remove_all(server)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_lab(browser: Any, server: JupyterProcess, console: list[str]) -> Any:
    """A page on `server`'s Lab, its console errors (but refused requests, which this module provokes) in `console`."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)

    def on_console(msg: Any) -> None:
        url = msg.location.get("url", "")
        if msg.type == "error" and "status of 4" not in msg.text and (not url or url.startswith(server.url)):
            console.append(f"{msg.text} ({url})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: console.append(f"page error: {exc}"))
    page.goto(f"{server.url}lab?token={server.token}")
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=90_000)
    open_panel(page)
    return page


@pytest.fixture(scope="module")
def console() -> list[str]:
    """Browser console errors and page errors seen during the module."""
    return []


@pytest.fixture(scope="module")
def page(browser: Any, lab: JupyterProcess, deployment: dict[str, Any], console: list[str]) -> Iterator[Any]:
    pg = open_lab(browser, lab, console)
    yield pg
    pg.context.close()


@pytest.fixture(scope="module")
def hub_page(browser: Any, hub_lab: tuple[JupyterProcess, dict[str, Any]], console: list[str]) -> Iterator[Any]:
    pg = open_lab(browser, hub_lab[0], console)
    yield pg
    pg.context.close()


def shot(page: Any, artifacts_dir: Path, name: str) -> None:
    page.locator(f"{DIALOG} .jp-Dialog-content").first.screenshot(path=str(artifacts_dir / f"lab-share-{name}.png"))


def open_share(page: Any) -> Any:
    item(page, NAME).locator('[data-action="share"]').click()
    dialog = page.locator(SHARE)
    dialog.wait_for()
    return dialog


def share_of(server: JupyterProcess, dep: dict[str, Any]) -> dict[str, Any]:
    answer = server.api("GET", f"deployments/{dep['id']}/share")
    assert answer.status_code == 200, answer.text
    return answer.json()


def close_dialog(page: Any) -> None:
    page.locator(f"{DIALOG} .jp-Dialog-footer .jp-Dialog-button", has_text="Close").click()
    page.locator(DIALOG).wait_for(state="detached")


def test_outside_a_hub_the_settings_are_saved_with_a_note(page: Any, lab: JupyterProcess,
                                                          deployment: dict[str, Any], artifacts_dir: Path) -> None:
    wait_status(page, NAME, "active", timeout=60)
    dialog = open_share(page)
    assert page.locator(f"{DIALOG} .jp-Dialog-header").inner_text() == f"Share {NAME}"
    assert dialog.get_attribute("data-hub") == "no"
    note = dialog.locator(".jp-ModelDeploy-shareNoHub").inner_text()
    assert "does not run under a JupyterHub" in note and "no share page" in note and "Generate token" in note
    assert dialog.locator(".jp-ModelDeploy-shareUrl").count() == 0
    assert dialog.locator(".jp-ModelDeploy-shareHolders").count() == 0  # nobody can hold a shared key here
    model = deployment["models"][0]["name"]
    dialog.locator('[name="users"]').fill("bob, Carol")
    dialog.locator('[name="groups"]').fill("ml-team")
    dialog.locator('select[name="priority"]').select_option("batch")
    dialog.locator(f'input[name="model"][value="{model}"]').check()
    dialog.locator('[name="requests_per_minute"]').fill("1.5")
    # Not a whole number: said as it is typed, and Save waits.
    hint = dialog.locator('label:has([name="requests_per_minute"]) .jp-ModelDeploy-fieldError')
    assert hint.is_visible() and dialog.locator('[data-action="save-share"]').is_disabled()
    dialog.locator('[name="requests_per_minute"]').fill("30")
    assert not hint.is_visible()
    assert dialog.locator('.jp-ModelDeploy-shareSave [data-saved="no"]').inner_text() == "Not saved yet."
    dialog.locator('[data-action="save-share"]').click()
    dialog.locator(".jp-ModelDeploy-shareSaved").wait_for()
    assert dialog.locator(".jp-ModelDeploy-shareSaved").inner_text().startswith("Saved: in force now.")
    assert dialog.locator(".jp-ModelDeploy-shareRevoked").count() == 0  # no keys to revoke
    assert dialog.locator('[name="users"]').input_value() == "bob, carol"  # as the server keeps them
    shot(page, artifacts_dir, "no-hub")
    stored = share_of(lab, deployment)
    assert stored["hub"] is False and stored["share_url"] is None
    assert stored["share_with"] == {
        "users": ["bob", "carol"], "groups": ["ml-team"], "role": "inference", "models": [model],
        "priority": "batch",
        "quotas": {"requests_per_minute": 30, "tokens_per_minute": None, "max_in_flight": None, "daily_tokens": None},
    }
    # The settings travel with the exported configuration.
    exported = lab.api("GET", f"deployments/{deployment['id']}/export").json()
    assert exported["share_with"]["groups"] == ["ml-team"]
    assert exported["share_with"]["quotas"]["requests_per_minute"] == 30


def test_a_bad_name_is_refused_by_field_and_keeps_the_inputs(page: Any, lab: JupyterProcess,
                                                             deployment: dict[str, Any], artifacts_dir: Path) -> None:
    before = share_of(lab, deployment)["share_with"]
    dialog = page.locator(SHARE)
    users = dialog.locator('[name="users"]')
    users.fill("bad name, carol")
    dialog.locator('[name="groups"]').fill("ml-team, research")
    # Enter in a field saves, as the button does (and does not close the dialog).
    users.press("Enter")
    message = dialog.locator(".jp-ModelDeploy-formMessage")
    wait_until(lambda: "users.0" in message.inner_text(), 10, "the server's refusal naming users.0")
    assert "does not allow" in message.inner_text()
    assert "jp-ModelDeploy-atFault" in users.get_attribute("class")
    fault = dialog.locator('label:has([name="users"]) .jp-ModelDeploy-fieldFault').inner_text()
    assert fault == 'users.0 "bad name": has characters this field does not allow'
    assert dialog.locator(".jp-ModelDeploy-shareSaved").count() == 0
    # What was typed is still there.
    assert users.input_value() == "bad name, carol"
    assert dialog.locator('[name="groups"]').input_value() == "ml-team, research"
    assert dialog.locator('select[name="priority"]').input_value() == "batch"
    assert dialog.locator('[name="requests_per_minute"]').input_value() == "30"
    shot(page, artifacts_dir, "refused")
    assert share_of(lab, deployment)["share_with"] == before
    # Changing the field clears its mark.
    users.fill("bob, carol")
    assert "jp-ModelDeploy-atFault" not in users.get_attribute("class")
    assert dialog.locator(".jp-ModelDeploy-fieldFault").count() == 0
    close_dialog(page)
    assert share_of(lab, deployment)["share_with"] == before


def test_under_a_hub_the_dialog_gives_the_share_page(hub_page: Any, hub_lab: tuple[JupyterProcess, dict[str, Any]],
                                                     artifacts_dir: Path) -> None:
    server, record = hub_lab
    page = hub_page
    item(page, NAME).wait_for()
    # The key list says whose shared keys are whose.
    page.locator(f"{TOKENS} > summary").click()
    badges = page.locator(f"{TOKENS} .jp-ModelDeploy-tokenHub")
    wait_until(lambda: badges.count() == 2, 20, "the two shared keys in the key list")
    assert sorted(badges.all_inner_texts()) == ["Hub: bob", "Hub: dave"]
    page.locator(PANEL).screenshot(path=str(artifacts_dir / "lab-share-panel.png"))
    dialog = open_share(page)
    assert dialog.get_attribute("data-hub") == "yes"
    assert dialog.locator(".jp-ModelDeploy-shareNoHub").count() == 0
    url = dialog.locator(".jp-ModelDeploy-shareUrl").inner_text()
    assert dialog.locator(".jp-ModelDeploy-shareUrl").get_attribute("href") == url
    assert url.startswith(server.url) and url.endswith(f"/services/modeldeploy-share/alice/{NAME}")
    assert url == share_of(server, record)["share_url"]
    how_to = dialog.locator(".jp-ModelDeploy-shareHowTo").inner_text()
    assert how_to.startswith("Send this link to bob and the members of ml-team")
    dialog.locator('[data-action="copy-share-url"]').click()
    assert dialog.locator('[data-action="copy-share-url"]').inner_text() == "Copied"
    holders = dialog.locator(".jp-ModelDeploy-holder")
    assert [h.get_attribute("data-hub-user") for h in holders.all()] == ["bob", "dave"]
    keys = {t["hub_user"]: t for t in share_of(server, record)["holders"]}
    dave = dialog.locator('.jp-ModelDeploy-holder[data-hub-user="dave"]')
    assert dave.locator(".jp-ModelDeploy-tokenPrefix").inner_text() == f"{keys['dave']['prefix']}…"
    assert dave.locator(".jp-ModelDeploy-tokenTimes").inner_text().startswith("created ")
    assert dave.locator(".jp-ModelDeploy-tokenUsed").inner_text() == "never used"
    assert dave.locator(".jp-ModelDeploy-holderGroups").inner_text() == "groups: ml-team"
    shot(page, artifacts_dir, "hub")
    # Revoke dave's key from the list: it goes, and so does it on the server.
    dave.locator('[data-action="revoke-holder"]').click()
    dave.wait_for(state="detached")
    assert [h["hub_user"] for h in share_of(server, record)["holders"]] == ["bob"]
    assert server.api("GET", f"tokens/{keys['dave']['id']}").json()["revoked_at"] is not None
    wait_until(lambda: page.locator(f"{TOKENS} .jp-ModelDeploy-tokenHub").all_inner_texts() == ["Hub: bob"], 20,
               "dave's key gone from the key list")


def test_a_save_that_drops_a_holder_revokes_their_key(hub_page: Any, hub_lab: tuple[JupyterProcess, dict[str, Any]],
                                                      console: list[str], artifacts_dir: Path) -> None:
    server, record = hub_lab
    page = hub_page
    dialog = page.locator(SHARE)
    bob = share_of(server, record)["holders"][0]
    dialog.locator('[name="users"]').fill("carol")
    dialog.locator('[name="groups"]').fill("")
    dialog.locator('[data-action="save-share"]').click()
    revoked = dialog.locator(".jp-ModelDeploy-shareRevoked")
    revoked.wait_for()
    assert revoked.inner_text() == "Revoked: bob's key."
    assert dialog.locator(".jp-ModelDeploy-holder").count() == 0
    assert dialog.locator(".jp-ModelDeploy-shareHolders h3").inner_text().endswith("(0)")
    assert dialog.locator(".jp-ModelDeploy-shareHowTo").inner_text().startswith("Send this link to carol:")
    shot(page, artifacts_dir, "hub-revoked")
    state = share_of(server, record)
    assert state["share_with"]["users"] == ["carol"] and state["share_with"]["groups"] == []
    assert state["holders"] == []
    assert server.api("GET", f"tokens/{bob['id']}").json()["revoked_at"] is not None
    close_dialog(page)
    assert console == []
