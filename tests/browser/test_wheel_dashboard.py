"""The wheel, installed into a fresh environment, serves the same Voilà dashboard as a checkout.

Builds the wheel from this checkout (the prebuilt lab extension must be there: `make labext`),
installs it with Voilà into a new virtual environment, starts `jupyter lab` from that
environment with a server root that holds no notebooks, and opens the dashboard from the
Lab panel in Debian's Chromium. Screenshot: tests/artifacts/wheel-dashboard.png.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, quiet_lab_settings, wait_until
from tests.support.jupyter import JupyterProcess

pytestmark = [pytest.mark.browser, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
PANEL = "#jupyter-modeldeploy-panel"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (REPO / "jupyter_modeldeploy" / "labextension" / "static" / "style.js").is_file():
        pytest.fail("the lab extension is not built: run 'make labext'")
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    [built] = out.glob("jupyter_modeldeploy-*.whl")
    return built


def test_the_wheel_holds_the_dashboard_notebook(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "jupyter_modeldeploy/notebooks/dashboard.ipynb" in names
    packaged = json.loads(zipfile.ZipFile(wheel).read("jupyter_modeldeploy/notebooks/dashboard.ipynb"))
    assert packaged == json.loads((REPO / "notebooks" / "dashboard.ipynb").read_text())


@pytest.fixture(scope="module")
def fresh_lab(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProcess]:
    """`jupyter lab` of a new environment where only the wheel (and Voilà) were installed."""
    home = tmp_path_factory.mktemp("fresh")
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel), "voila"],
                          capture_output=True, text=True, timeout=1500, env=env, cwd=home)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    where = subprocess.run([str(python), "-c", "import jupyter_modeldeploy; print(jupyter_modeldeploy.__file__)"],
                           capture_output=True, text=True, env=env, cwd=home, check=True).stdout.strip()
    assert where.startswith(str(venv)), where  # the wheel's package, not this checkout's
    root = home / "root"  # a server root without any notebook: the dashboard comes from the package
    root.mkdir()
    lab_home = home / "lab"
    quiet_lab_settings(lab_home)
    server = JupyterProcess(lab_home, app="lab", python=str(python), root_dir=root).start(timeout=240)
    yield server
    server.stop()


def test_the_panel_opens_the_packaged_dashboard(fresh_lab: JupyterProcess, artifacts_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    info = fresh_lab.api("GET", "dashboard").json()
    assert info["voila"] is True and info["url"] == "/modeldeploy/dashboard", info
    assert "/venv/" in info["notebook"], info
    # A deployment to look at, stored without starting an engine.
    config = {"kind": "llamacpp", "name": "wheel-smol", "model": "/models/smol.gguf"}
    assert fresh_lab.api("POST", "import?launch=0", json=config).status_code in (200, 201)
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{fresh_lab.url}lab?token={fresh_lab.token}", timeout=180_000)
            page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=180_000)
            if not page.is_visible(PANEL):
                page.click('.jp-SideBar [data-id="jupyter-modeldeploy-panel"]')
            item = page.locator(f'{PANEL} .jp-ModelDeploy-item[data-name="wheel-smol"]')
            item.wait_for(timeout=60_000)
            item.locator('[data-action="dashboard"]').click()
            frame_element = page.locator(".jp-ModelDeploy-voila iframe >> visible=true")
            frame_element.wait_for(timeout=60_000)
            src = frame_element.get_attribute("src") or ""
            assert src.startswith("/modeldeploy/dashboard?deployment="), src
            frame = page.frame_locator(".jp-ModelDeploy-voila iframe >> visible=true")
            dashboard = frame.locator(".modeldeploy-dashboard")
            dashboard.wait_for(timeout=240_000)
            wait_until(lambda: "wheel-smol" in dashboard.inner_text(), 60, "the dashboard shows the deployment")
            assert frame.locator(".modeldeploy-endpoints").count() == 1  # the same app a checkout serves
            page.wait_for_timeout(1500)
            page.screenshot(path=str(artifacts_dir / "wheel-dashboard.png"))
        finally:
            browser.close()
