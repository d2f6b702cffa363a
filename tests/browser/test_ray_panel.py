"""The Lab panel shows a Ray deployment's replicas (a real browser, a real two-node Ray cluster)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_modeldeploy import ray_local
from tests.browser.test_lab_panel import PANEL, item, open_panel, wait_status
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, lab_with_this_build
from tests.support.jupyter import JupyterProcess
from tests.support.ray_cluster import start_cluster, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.integration]



@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, llama_server_bin: Path) -> Iterator[tuple[JupyterProcess, Any]]:
    home = tmp_path_factory.mktemp("ray-panel")
    cluster = start_cluster(home / "ray-logs", nodes=2)
    server = lab_with_this_build(home, [f"--ModelDeployApp.ray_address={cluster.address}"])
    try:
        yield server.start(timeout=180), cluster
    finally:
        for record in server.api("GET", "deployments").json()["deployments"]:
            server.api("DELETE", f"deployments/{record['id']}")
        server.stop()
        ray_local.stop(cluster)


def test_a_ray_deployment_lists_its_replicas_and_nodes(lab: tuple[JupyterProcess, Any], smollm2_gguf: Path,
                                                       artifacts_dir: Path) -> None:
    server, _ = lab
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    record = server.client().launch({
        "kind": "llamacpp", "name": "ray-panel", "model": str(smollm2_gguf), "threads": 1, "ctx_size": 512,
        "placement": {"target": "ray", "replicas": {"min": 2, "max": 2}, "resources": {"cpus": 1}},
    })
    wait_until(lambda: sum(r["state"] == "serving" for r in server.client().get(record["id"])["replicas"]) == 2,
               240, "two replicas serving")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(30_000)
        page.goto(f"{server.url}lab?token={server.token}")
        page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=90_000)
        open_panel(page)
        wait_status(page, "ray-panel", "active", timeout=120)
        replicas = item(page, "ray-panel").locator(".jp-ModelDeploy-replicas")
        replicas.locator("summary").click()
        assert "2 of 2 replicas serving" in replicas.locator("summary").inner_text()
        rows = replicas.locator(".jp-ModelDeploy-replica")
        assert rows.count() == 2
        assert all(rows.nth(i).get_attribute("data-state") == "serving" for i in range(2))
        assert "sent" in rows.first.inner_text()
        page.locator(PANEL).screenshot(path=str(artifacts_dir / "lab-panel-ray-replicas.png"))
        browser.close()
