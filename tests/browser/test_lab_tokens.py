"""Sharing an endpoint from the JupyterLab panel, in real Chromium against a real `jupyter lab`.

The deployment is served by the fake engine (tests/support/fake_server.py): the gateway, the
keys and their quotas run for real in seconds, without a model. The steps: a scoped key with
quotas made through the "Generate token" dialog (a bad quota and a label the server refuses
shown in the form first), its value shown once, one request through the gateway with it so
that "last used" fills, a quota changed, the key revoked, and the deployment registered with
jupyter-ai and unregistered from the panel (jupyter-ai itself is not needed: the registration
writes its config.json in the server's Jupyter data folder; a damaged one is refused with its
reason shown).
Screenshots go to tests/artifacts/lab-panel-tokens*.png and lab-panel-jupyter-ai.png.

The tests run in file order and share one page: each step starts from where the last one left.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.test_lab_panel import PANEL, item, open_panel, wait_status
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, lab_with_this_build, wait_until
from tests.support.fake_server import fake_deployment, fake_llama_server
from tests.support.jupyter import JupyterProcess

pytestmark = [pytest.mark.browser, pytest.mark.integration]

DIALOG = ".jp-Dialog"
TOKENS = f"{PANEL} .jp-ModelDeploy-tokens"
NAME = "shared"
LABEL = "team app for the notebook group"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProcess]:
    """A `jupyter lab` of our own serving llamacpp deployments with the fake engine, this checkout's
    built extension copied into its data dir."""
    home = tmp_path_factory.mktemp("lab-tokens")
    program = fake_llama_server(home / "bin")
    server = lab_with_this_build(home, [f"--ModelDeployApp.llamacpp_server={program}",
                                        "--ModelDeployApp.llamacpp_engine=llama-server"]).start()
    try:
        yield server
    finally:
        for record in server.api("GET", "deployments").json()["deployments"]:
            server.api("DELETE", f"deployments/{record['id']}")
        server.stop()


@pytest.fixture(scope="module")
def deployment(lab: JupyterProcess) -> dict[str, Any]:
    client = lab.client()
    return client.wait(client.launch(fake_deployment(NAME, project="team-a"))["id"], timeout=60)


@pytest.fixture(scope="module")
def console() -> list[str]:
    """Browser console errors and page errors seen during the module."""
    return []


@pytest.fixture(scope="module")
def page(lab: JupyterProcess, deployment: dict[str, Any], console: list[str]) -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(30_000)

        def on_console(msg: Any) -> None:
            url = msg.location.get("url", "")
            # A refused request (the 422 this module provokes) is logged by Chromium as a failed load.
            if msg.type == "error" and "status of 4" not in msg.text and (not url or url.startswith(lab.url)):
                console.append(f"{msg.text} ({url})")

        pg.on("console", on_console)
        pg.on("pageerror", lambda exc: console.append(f"page error: {exc}"))
        pg.goto(f"{lab.url}lab?token={lab.token}")
        pg.wait_for_selector("#jupyterlab-splash", state="detached", timeout=90_000)
        yield pg
        context.close()
        browser.close()


def shot(page: Any, artifacts_dir: Path, name: str, selector: str | None = None) -> None:
    target = page.locator(selector).first if selector else page
    target.screenshot(path=str(artifacts_dir / f"lab-panel-{name}.png"))


def token_row(page: Any, token_id: str) -> Any:
    return page.locator(f'{TOKENS} .jp-ModelDeploy-token[data-token="{token_id}"]')


def quotas_shown(row: Any) -> str:
    return " ".join(row.locator(".jp-ModelDeploy-tokenQuotas > span").all_inner_texts())


def only_token(lab: JupyterProcess, label: str) -> dict[str, Any]:
    live = [t for t in lab.api("GET", "tokens").json()["tokens"] if t["name"] == label and t["revoked_at"] is None]
    assert len(live) == 1, live
    return live[0]


def fill_dialog(page: Any, values: dict[str, str]) -> None:
    dialog = page.locator(DIALOG)
    for name, value in values.items():
        dialog.locator(f'[name="{name}"]').fill(value)


def test_generate_a_scoped_token_with_quotas(page: Any, lab: JupyterProcess, deployment: dict[str, Any],
                                             artifacts_dir: Path) -> None:
    open_panel(page)
    wait_status(page, NAME, "active", timeout=60)
    page.locator(f"{TOKENS} > summary").click()
    page.locator(f"{TOKENS} .jp-ModelDeploy-newToken").click()
    dialog = page.locator(DIALOG)
    dialog.locator('select[name="scope"]').wait_for()
    assert dialog.locator('select[name="scope"]').input_value() == f"deployment:{deployment['id']}"
    model = deployment["models"][0]["name"]
    models = dialog.locator(".jp-ModelDeploy-modelChoice")
    # A project scope has no model list; a deployment lists its models.
    dialog.locator('select[name="scope"]').select_option(label="project team-a")
    assert models.is_hidden()
    dialog.locator('select[name="scope"]').select_option(label=f"deployment {NAME}")
    assert models.locator('input[name="model"]').count() == len(deployment["models"])
    dialog.locator(f'input[name="model"][value="{model}"]').check()
    dialog.locator('select[name="role"]').select_option("inference")
    dialog.locator('select[name="priority"]').select_option("batch")
    dialog.locator('select[name="expiry"]').select_option("86400")
    fill_dialog(page, {"name": LABEL, "requests_per_minute": "60", "tokens_per_minute": "1.5",
                       "max_in_flight": "2", "daily_tokens": "100000"})
    # Not a whole number: the field says so as it is typed, and Generate waits.
    hint = dialog.locator('label:has([name="tokens_per_minute"]) .jp-ModelDeploy-fieldError')
    assert hint.is_visible() and hint.inner_text() == "a whole number, at least 1"
    assert dialog.locator(".jp-mod-accept").is_disabled()
    shot(page, artifacts_dir, "token-dialog", DIALOG + " .jp-Dialog-content")
    # Over the bound: refused here on Generate, the form comes back with what was typed and why.
    fill_dialog(page, {"tokens_per_minute": "5000000000000"})
    assert not hint.is_visible()
    dialog.locator(".jp-mod-accept").click()
    message = page.locator(f"{DIALOG} .jp-ModelDeploy-formMessage")
    assert "Tokens per minute" in message.inner_text() and '"5000000000000"' in message.inner_text()
    assert page.locator(f'{DIALOG} [name="requests_per_minute"]').input_value() == "60"
    assert page.locator(f'{DIALOG} input[name="model"][value="{model}"]').is_checked()
    assert page.locator(f'{DIALOG} select[name="expiry"]').input_value() == "86400"
    # Refused by the server (a label over 200 characters): its 422 message, in the form.
    fill_dialog(page, {"tokens_per_minute": "10000", "name": "x" * 201})
    page.locator(f"{DIALOG} .jp-mod-accept").click()
    wait_until(lambda: "at most 200 characters" in page.locator(f"{DIALOG} .jp-ModelDeploy-formMessage").inner_text(),
               10, "the server's message in the form")
    assert "invalid request" in message.inner_text()
    label = page.locator(f'{DIALOG} [name="name"]')
    assert "jp-ModelDeploy-atFault" in label.get_attribute("class")  # the field the server named
    shot(page, artifacts_dir, "token-dialog-refused", DIALOG + " .jp-Dialog-content")
    assert not [t for t in lab.api("GET", "tokens").json()["tokens"] if t["revoked_at"] is None]
    fill_dialog(page, {"name": LABEL})
    page.locator(f"{DIALOG} .jp-mod-accept").click()
    # The value, shown once, with a copy button.
    secret = page.locator(f"{DIALOG} .jp-ModelDeploy-secretValue")
    value = secret.input_value()
    assert len(value) >= 32, "the whole value"
    page.locator(f'{DIALOG} [data-action="copy-secret"]').click()
    assert page.locator(f'{DIALOG} [data-action="copy-secret"]').inner_text() == "Copied"
    shot(page, artifacts_dir, "token-secret", DIALOG + " .jp-Dialog-content")
    page.locator(f"{DIALOG} .jp-mod-accept").click()
    page.locator(DIALOG).wait_for(state="detached")
    made = only_token(lab, LABEL)
    assert value.startswith(made["prefix"])
    assert made["deployment_id"] == deployment["id"] and made["role"] == "inference" and made["models"] == [model]
    assert made["priority"] == "batch"
    assert made["quotas"] == {"requests_per_minute": 60, "tokens_per_minute": 10000, "max_in_flight": 2,
                              "daily_tokens": 100000}
    assert made["expires_at"] == pytest.approx(time.time() + 86400, abs=120)
    assert value not in json.dumps(lab.api("GET", "tokens").json())  # shown once: only the hash is kept
    page.evaluate("v => { window.__mdKey = v; }", value)


def test_the_list_shows_role_quotas_and_last_use(page: Any, lab: JupyterProcess, deployment: dict[str, Any],
                                                 artifacts_dir: Path) -> None:
    made = only_token(lab, LABEL)
    row = token_row(page, made["id"])
    row.wait_for()
    assert row.get_attribute("data-role") == "inference"
    assert row.locator(".jp-ModelDeploy-tokenRole").inner_text() == "inference"
    assert row.locator(".jp-ModelDeploy-tokenPriority").inner_text() == "batch"
    assert row.locator(".jp-ModelDeploy-tokenScope").inner_text() == f"deployment {NAME}"
    assert row.locator(".jp-ModelDeploy-tokenModels").inner_text() == deployment["models"][0]["name"]
    assert quotas_shown(row) == "60 req/min · 10K tok/min · 2 in flight · 100K tok/day"
    assert row.locator(".jp-ModelDeploy-tokenUsed").inner_text() == "never used"
    assert "expires in 23 h" in row.locator(".jp-ModelDeploy-tokenTimes").inner_text()
    key = page.evaluate("() => window.__mdKey")
    answer = httpx.post(f"{deployment['api_base']}/chat/completions", headers={"Authorization": f"Bearer {key}"},
                        json={"model": deployment["models"][0]["name"], "max_tokens": 3,
                              "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert answer.status_code == 200, answer.text
    # The panel polls the tokens while their section is open: last used fills by itself.
    row.locator('.jp-ModelDeploy-tokenUsed[data-used="yes"]').wait_for(timeout=20_000)
    assert row.locator(".jp-ModelDeploy-tokenUsed").inner_text().startswith("used ")
    shot(page, artifacts_dir, "tokens", PANEL)


def test_change_a_quota_from_the_panel(page: Any, lab: JupyterProcess, artifacts_dir: Path) -> None:
    made = only_token(lab, LABEL)
    row = token_row(page, made["id"])
    row.locator('[data-action="edit-quotas"]').click()
    dialog = page.locator(DIALOG)
    assert dialog.locator('[name="requests_per_minute"]').input_value() == "60"
    assert dialog.locator('[name="daily_tokens"]').input_value() == "100000"
    fill_dialog(page, {"requests_per_minute": "0"})
    assert dialog.locator(".jp-mod-accept").is_disabled()
    fill_dialog(page, {"requests_per_minute": "120", "max_in_flight": ""})
    shot(page, artifacts_dir, "token-quotas", DIALOG + " .jp-Dialog-content")
    page.locator(f"{DIALOG} .jp-mod-accept").click()
    page.locator(DIALOG).wait_for(state="detached")
    wait_until(lambda: quotas_shown(row) == "120 req/min · 10K tok/min · 100K tok/day", 10, "the new quotas in the list")
    assert only_token(lab, LABEL)["quotas"] == {"requests_per_minute": 120, "tokens_per_minute": 10000,
                                                "max_in_flight": None, "daily_tokens": 100000}


def test_revoke_from_the_panel(page: Any, lab: JupyterProcess, deployment: dict[str, Any]) -> None:
    made = only_token(lab, LABEL)
    token_row(page, made["id"]).locator('[data-action="revoke"]').click()
    page.locator(f"{DIALOG} .jp-mod-accept").click()
    token_row(page, made["id"]).wait_for(state="detached")
    assert lab.api("GET", f"tokens/{made['id']}").json()["revoked_at"] is not None
    key = page.evaluate("() => window.__mdKey")
    refused = httpx.get(f"{deployment['api_base']}/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert refused.status_code == 401


def test_register_and_unregister_with_jupyter_ai(page: Any, lab: JupyterProcess, deployment: dict[str, Any],
                                                 console: list[str], artifacts_dir: Path) -> None:
    config = lab.home / "data" / "jupyter_ai" / "config.json"
    model = deployment["models"][0]["name"]
    # A damaged config.json is left alone, and the server's reason is shown.
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("{not json")
    item(page, NAME).locator('[data-action="jupyter-ai"]').click()
    error = page.locator(DIALOG)
    assert "not valid JSON" in error.locator(".jp-Dialog-body").inner_text()
    assert "jupyter-ai" in error.locator(".jp-Dialog-header").inner_text()
    error.locator(".jp-Dialog-button", has_text="Close").click()
    error.wait_for(state="detached")
    assert config.read_text() == "{not json"
    config.unlink()
    item(page, NAME).locator('[data-action="jupyter-ai"]').click()
    dialog = page.locator(DIALOG)
    dialog.locator(".jp-ModelDeploy-jupyterAI").wait_for()
    assert dialog.locator(".jp-Dialog-header").inner_text() == f"{NAME} registered with jupyter-ai"
    assert dialog.locator(".jp-ModelDeploy-jupyterAI code").all_inner_texts() == [f"openai/{model}"]
    shot(page, artifacts_dir, "jupyter-ai", DIALOG + " .jp-Dialog-content")
    entries = json.loads(config.read_text())["custom_models"]
    assert [e["model_id"] for e in entries] == [f"openai/{model}"]
    assert entries[0]["params"]["api_base"] == deployment["api_base"]
    assert lab.api("GET", f"deployments/{deployment['id']}/jupyter-ai").json()["registered"] is True
    dialog.locator(".jp-mod-accept").click()
    page.locator(DIALOG).wait_for(state="detached")
    # Registered: the same action now shows its models and offers to unregister.
    item(page, NAME).locator('[data-action="jupyter-ai"]').click()
    assert "is registered with jupyter-ai" in page.locator(f"{DIALOG} .jp-ModelDeploy-jupyterAI p").inner_text()
    assert page.locator(f"{DIALOG} .jp-ModelDeploy-jupyterAI code").all_inner_texts() == [f"openai/{model}"]
    shot(page, artifacts_dir, "jupyter-ai-registered", DIALOG + " .jp-Dialog-content")
    page.locator(f"{DIALOG} .jp-Dialog-button", has_text="Unregister").click()
    page.locator(DIALOG).wait_for(state="detached")
    wait_until(lambda: json.loads(config.read_text())["custom_models"] == [], 10, "the entries removed")
    assert lab.api("GET", f"deployments/{deployment['id']}/jupyter-ai").json() == {
        "version": 3, "config": "config.json", "registered": False, "models": [], "selected": []}
    jupyter_ai_keys = [t for t in lab.api("GET", "tokens").json()["tokens"] if t["name"] == "jupyter-ai"]
    assert jupyter_ai_keys and all(t["revoked_at"] is not None for t in jupyter_ai_keys)
    shot(page, artifacts_dir, "tokens-end", PANEL)
    assert console == []
