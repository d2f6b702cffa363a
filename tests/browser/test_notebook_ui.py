"""The notebook UI for real: the quickstart notebook run top to bottom, the Voilà dashboard in Chromium.

Needs the built llama-server (the session's `jupyter_server` fixture builds it when missing)
and Debian's Chromium at /usr/bin/chromium. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def smol(jupyter_server: Any, smollm2_gguf: Path) -> Iterator[dict[str, Any]]:
    """A live llama.cpp deployment of SmolLM2 for the dashboard."""
    client = jupyter_server.client()
    record = client.launch({
        "kind": "llamacpp", "name": "ui-smol", "model": str(smollm2_gguf), "threads": 2, "parallel": 2,
        "ctx_size": 1024, "idle_time_limit_hours": 1,
    })
    try:
        yield client.wait(record["id"], timeout=180)
    finally:
        with contextlib.suppress(Exception):
            client.delete(record["id"])


def chat(record: dict[str, Any], key: str, prompt: str, max_tokens: int = 8) -> dict[str, Any]:
    model = record["models"][0]["name"]
    response = httpx.post(
        record["api_base"] + "/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=180,
        json={"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens},
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_quickstart_notebook_runs_top_to_bottom(jupyter_server: Any, monkeypatch: pytest.MonkeyPatch,
                                                artifacts_dir: Path) -> None:
    import nbclient
    import nbformat

    # The kernel is started here (not by the server): point it at the test server.
    monkeypatch.setenv("JUPYTER_SERVER_URL", jupyter_server.url)
    monkeypatch.setenv("JUPYTER_TOKEN", jupyter_server.token)
    nb = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=400, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO / "notebooks")}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, artifacts_dir / "quickstart.executed.ipynb")
    outputs = {
        i: "".join(o.get("text", "") or json.dumps(o.get("data", {})) for o in cell.get("outputs", []))
        for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
    }
    sources = {i: nb.cells[i].source for i in outputs}
    launch = next(i for i, s in sources.items() if "%deploy llamacpp" in s)
    assert "active" in outputs[launch] or "idle" in outputs[launch]
    answer = next(i for i, s in sources.items() if "chat.completions.create" in s)
    assert outputs[answer].strip(), "the model answered nothing"
    dashboard = next(i for i, s in sources.items() if "smol.dashboard()" in s)
    assert "application/vnd.jupyter.widget-view+json" in outputs[dashboard]
    export = next(i for i, s in sources.items() if "%deploy export" in s)
    # The secret is never exported (its quotas, `api_key_quotas`, are configuration and are).
    assert '"name": "quickstart-smol"' in outputs[export] and '"api_key":' not in outputs[export]
    assert "quickstart-smol: stopped" in outputs[max(outputs)]
    records = [r for r in jupyter_server.client().list() if r["name"] == "quickstart-smol"]
    assert records and all(r["status"] == "stopped" for r in records)


def chart_path(page: Any, chart: str) -> str:
    """The `d` of the first line drawn in a chart panel ('' when none)."""
    return page.evaluate(
        """(cls) => { const p = document.querySelector(`.modeldeploy-chart-${cls} .curve path`);
                      return p ? (p.getAttribute('d') || '') : ''; }""",
        chart,
    )


def chart_points(page: Any, chart: str) -> list[list[tuple[float, float]]]:
    """The points of every line of a chart panel, read from the SVG paths bqplot drew."""
    paths = page.evaluate(
        """(cls) => Array.from(document.querySelectorAll(`.modeldeploy-chart-${cls} .curve path.line`))
                         .map(p => p.getAttribute('d') || '')""",
        chart,
    )
    lines = []
    for d in paths:
        numbers = [float(n) for n in re.findall(r"-?[\d.]+(?:e-?\d+)?|NaN", d)]
        lines.append(list(zip(numbers[0::2], numbers[1::2])))
    return lines


def plot_height(page: Any, chart: str) -> float:
    """The height of a chart's plot area (its lines' y coordinates run from 0 to it)."""
    return float(page.evaluate(
        """(cls) => parseFloat(document.querySelector(`.modeldeploy-chart-${cls} rect.plotarea_background`)
                                .getAttribute('height'))""",
        chart,
    ))


def axis_labels(page: Any, chart: str) -> dict[str, list[str]]:
    """A chart's tick labels ({'x': [...], 'y': [...]}) and whether its last time label fits in the figure."""
    return page.evaluate(
        """(cls) => {
          const root = document.querySelector(`.modeldeploy-chart-${cls}`);
          const axes = Array.from(root.querySelectorAll('g.axis'));
          const labels = (anchor) => axes.filter(a => a.getAttribute('text-anchor') === anchor)
              .flatMap(a => Array.from(a.querySelectorAll('.tick text')));
          const xs = labels('middle'), ys = labels('end');
          const box = root.querySelector('svg').getBoundingClientRect();
          const last = xs.length ? xs[xs.length - 1].getBoundingClientRect() : null;
          return {x: xs.map(t => t.textContent), y: ys.map(t => t.textContent),
                  clipped: [last ? (last.right > box.right + 0.5 ? 'clipped' : 'fits') : 'none']};
        }""",
        chart,
    )


def test_fresh_dashboard_charts_draw_real_points_without_console_errors(
    jupyter_server: Any, smol: dict[str, Any], browser: Any, artifacts_dir: Path
) -> None:
    """A dashboard opened before any traffic: requests and tokens/s draw real, finite points on
    rounded axes from zero, and the browser console stays free of errors (bqplot's included)."""
    client = jupyter_server.client()
    page = browser.new_page(viewport={"width": 1400, "height": 1900})
    console: list[str] = []

    def on_console(msg: Any) -> None:
        url = msg.location.get("url", "")
        # This machine has no internet: CDN resources (Voilà's fonts, MathJax) cannot load. The
        # test environment's jupyter-server-proxy Lab extension cannot load in Voilà (no file browser).
        if msg.type == "error" and (not url or url.startswith(jupyter_server.url)) and \
                "/labextensions/@jupyterhub/jupyter-server-proxy/" not in msg.text:
            console.append(f"{msg.text} ({url})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: console.append(f"page error: {exc}"))
    # The packaged dashboard, where the server serves it.
    served = jupyter_server.api("GET", "dashboard").json()
    assert served["voila"], served
    url = f"{jupyter_server.url}{served['url'].lstrip('/')}?deployment={smol['id']}&token={jupyter_server.token}"
    try:
        page.goto(url, timeout=180_000)
        page.wait_for_selector(".modeldeploy-dashboard .modeldeploy-chart-requests svg", timeout=180_000)
        key = client.create_token(deployment=smol["id"], name="charts-test")["token"]
        for i in range(4):
            chat(smol, key, f"Count to {i + 3}.", max_tokens=16)
        chat(smol, key, "Tell a long story.", max_tokens=96)  # a long one: the charts keep moving meanwhile
        # Requests and tokens/s: lines with several real points, some above the zero line.
        for chart in ("requests", "tokens-per-s"):
            def drawn(chart: str = chart) -> bool:
                lines = chart_points(page, chart)
                return bool(lines) and len(lines[0]) >= 2 and len({y for _, y in lines[0]}) > 1
            wait_until(drawn, 60, f"the {chart} chart drew no points that rise above zero")
        time.sleep(6)  # a few more polls, where NaN and domain errors used to pile up
        for chart in ("requests", "tokens-per-s", "latency", "cpu", "memory", "network", "disk"):
            lines = chart_points(page, chart)
            assert all(math.isfinite(v) for line in lines for point in line for v in point), (chart, lines)
            # Every point inside the plot area: the axis grew with the data.
            height = plot_height(page, chart)
            assert all(-0.5 <= y <= height + 0.5 for line in lines for _, y in line), (chart, height, lines)
            labels = axis_labels(page, chart)
            assert labels["y"] and all(label.strip() for label in labels["y"]), (chart, labels)
            values = [float(label.replace(",", "")) for label in labels["y"]]
            assert min(values) == 0 and all(v >= 0 for v in values), (chart, labels)
            assert all(len(label.split(".")[-1]) <= 3 for label in labels["y"] if "." in label), (chart, labels)
            assert labels["x"] and labels["clipped"] == ["fits"], (chart, labels)
        header = page.locator(".modeldeploy-chart-tokens-per-s").inner_text()
        assert "Completion tokens per second" in header and "tok/s" in header, header
        page.screenshot(path=str(artifacts_dir / "voila-dashboard-charts.png"), full_page=True)
        assert not console, console
    finally:
        page.close()


def test_voila_dashboard_live(jupyter_server: Any, smol: dict[str, Any], browser: Any, artifacts_dir: Path) -> None:
    client = jupyter_server.client()
    page = browser.new_page(viewport={"width": 1400, "height": 1900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text) if msg.type == "error" else None)
    url = (f"{jupyter_server.url}voila/render/notebooks/dashboard.ipynb"
           f"?deployment={smol['id']}&token={jupyter_server.token}")
    page.goto(url, timeout=180_000)
    try:
        page.wait_for_selector(".modeldeploy-dashboard .modeldeploy-dashboard-status", timeout=180_000)
        page.wait_for_selector(".modeldeploy-dashboard .modeldeploy-status-active, "
                               ".modeldeploy-dashboard .modeldeploy-status-idle", timeout=60_000)
        dashboard = page.locator(".modeldeploy-dashboard")
        assert smol["api_base"] in dashboard.locator(".modeldeploy-dashboard-info").inner_text()
        # The endpoints table lists the deployment with its status timeline.
        table = page.locator(".modeldeploy-endpoints")
        assert "ui-smol" in table.inner_text()
        assert table.locator("svg.modeldeploy-timeline").count() >= 1
        page.screenshot(path=str(artifacts_dir / "voila-dashboard-initial.png"), full_page=True)
        # GPU panels say so when there is none.
        if not client.status().get("gpu"):
            page.wait_for_selector(".modeldeploy-chart-gpu-util.modeldeploy-chart-note", timeout=30_000)
            assert "no GPU" in page.locator(".modeldeploy-chart-gpu-util").inner_text()

        # The test command: type a prompt, Send, read the answer.
        prompt = page.locator(".modeldeploy-prompt input")
        prompt.fill("Reply with one word: hello")
        command = page.locator(".modeldeploy-test-command textarea")
        wait_until(lambda: "Reply with one word" in command.input_value(), 30, "the test command did not follow")
        assert "curl" in command.input_value() and "$MODELDEPLOY_API_KEY" in command.input_value()
        page.locator(".modeldeploy-send button, button.modeldeploy-send").first.click()
        page.wait_for_selector(".modeldeploy-answer-ok, .modeldeploy-answer-error", timeout=240_000)
        answer = page.locator(".modeldeploy-answer")
        assert answer.locator(".modeldeploy-answer-error").count() == 0, answer.inner_text()
        assert answer.inner_text().strip()
        # Send generated a key: masked until revealed.
        key_box = page.locator(".modeldeploy-key input")
        masked = key_box.input_value()
        assert masked and "•" in masked
        page.get_by_role("button", name="Reveal").click()
        wait_until(lambda: "•" not in key_box.input_value(), 30, "the key was not revealed")
        # Copy command: what lands on the clipboard carries that key and works as pasted.
        page.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                       origin=jupyter_server.url.rstrip("/"))
        page.locator(".modeldeploy-dashboard button.modeldeploy-copy", has_text="Copy command").click()
        wait_until(lambda: page.evaluate("() => navigator.clipboard.readText()").startswith("curl"), 10,
                   "Copy command put nothing on the clipboard")
        pasted = page.evaluate("() => navigator.clipboard.readText()")
        assert key_box.input_value() in pasted and "$MODELDEPLOY_API_KEY" not in pasted, pasted
        import subprocess

        done = subprocess.run(["bash", "-c", pasted], capture_output=True, text=True, timeout=120)
        assert '"choices"' in done.stdout, done.stdout + done.stderr
        # The console follows the engine's log.
        wait_until(lambda: "slot" in page.locator(".modeldeploy-log").inner_text(), 60, "no console lines")
        page.screenshot(path=str(artifacts_dir / "voila-dashboard-answer.png"), full_page=True)
        # Traffic: the charts draw it and keep moving.
        key = client.create_token(deployment=smol["id"], name="browser-test")["token"]
        for i in range(3):
            chat(smol, key, f"Count to {i + 2}.")
        first = wait_until(lambda: chart_path(page, "requests"), 60, "the requests chart drew no line")
        wait_until(lambda: chart_path(page, "tokens-per-s"), 60, "the tokens/s chart drew no line")
        wait_until(lambda: chart_path(page, "cpu"), 60, "the CPU chart drew no line")
        wait_until(lambda: chart_path(page, "memory"), 60, "the memory chart drew no line")
        wait_until(lambda: chart_path(page, "network"), 60, "the network chart drew no line")
        chat(smol, key, "Say yes.")
        wait_until(lambda: chart_path(page, "requests") not in ("", first), 60, "the requests chart did not move")
        header = page.locator(".modeldeploy-chart-requests").inner_text()
        assert re.search(r"\d", header), header

        page.screenshot(path=str(artifacts_dir / "voila-dashboard-live.png"), full_page=True)
        assert not [e for e in errors if "modeldeploy" in e], errors
        # Every drawn point inside its plot area: each axis grew with its data (by the next update
        # at the latest: the page may apply a new top a moment after the line that needs it).
        for name in ("requests", "latency", "tokens-per-s", "cpu", "memory", "network", "disk"):
            def outside(chart: str = name) -> list[float]:
                height = plot_height(page, chart)
                return [y for line in chart_points(page, chart) for _, y in line if not -0.5 <= y <= height + 0.5]

            if outside():
                time.sleep(5)  # the dashboard redraws every few seconds
            assert not outside(), (name, plot_height(page, name), outside(), console[-20:])
    finally:
        page.close()


def test_voila_launch_form_shows_server_errors_by_field(jupyter_server: Any, browser: Any,
                                                        artifacts_dir: Path) -> None:
    page = browser.new_page(viewport={"width": 1300, "height": 1400})
    page.goto(f"{jupyter_server.url}voila/render/notebooks/dashboard.ipynb?token={jupyter_server.token}",
              timeout=180_000)
    try:
        page.wait_for_selector(".modeldeploy-endpoints", timeout=180_000)
        page.get_by_role("tab", name="Launch").click()
        form = page.locator(".modeldeploy-launch-form")
        form.wait_for(timeout=60_000)
        form.locator(".modeldeploy-field-name input").fill("not a valid name")
        form.locator(".modeldeploy-launch button, button.modeldeploy-launch").first.click()
        error = form.locator(".modeldeploy-field-name .modeldeploy-field-error")
        error.wait_for(state="visible", timeout=60_000)
        assert "use only letters, digits" in error.inner_text() and "^" not in error.inner_text()
        assert form.locator(".modeldeploy-field-model .modeldeploy-field-error").inner_text().strip()
        page.screenshot(path=str(artifacts_dir / "voila-launch-form-errors.png"), full_page=True)
    finally:
        page.close()


def test_standalone_voila_dashboard_reaches_the_server_from_the_query_string(
    jupyter_server: Any, smol: dict[str, Any], browser: Any, artifacts_dir: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys
    from urllib.parse import quote

    from tests.support.jupyter import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_", "JPY_", "MODELDEPLOY_"))}
    env.update({"JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_DATA_DIR": str(tmp_path / "data"),
                "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")})
    log = (tmp_path / "voila.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "voila", "notebooks/dashboard.ipynb", "--no-browser", f"--port={port}",
         "--Voila.ip=127.0.0.1"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    try:
        wait_until(lambda: _listening(port), 90, "voila did not start")
        query = f"deployment={smol['name']}&server={quote(jupyter_server.url)}&token={jupyter_server.token}"
        page.goto(f"http://127.0.0.1:{port}/?{query}", timeout=180_000)
        page.wait_for_selector(".modeldeploy-dashboard .modeldeploy-status-active, "
                               ".modeldeploy-dashboard .modeldeploy-status-idle", timeout=180_000)
        assert smol["id"] in page.locator(".modeldeploy-dashboard").inner_text()
        wait_until(lambda: chart_path(page, "cpu"), 60, "the CPU chart drew no line")
        page.screenshot(path=str(artifacts_dir / "voila-standalone.png"), full_page=True)
    finally:
        page.close()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _listening(port: int) -> bool:
    """Whether something accepts connections on the port (a GET of '/' would run the notebook)."""
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0
