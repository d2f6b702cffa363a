"""Endpoint requests keep the Jupyter server active (what JupyterHub's idle culler reads from `/api/status`), or not,
per `ModelDeployApp.endpoint_activity`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from tests.support.fake_server import fake_deployment, fake_jupyter
from tests.support.jupyter import JupyterProcess
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration
KEY = "sk-activity-key-0001"


def last_activity(jupyter: JupyterProcess) -> datetime:
    answer = httpx.get(f"http://127.0.0.1:{jupyter.port}/api/status", headers=jupyter.headers, timeout=10)
    return datetime.fromisoformat(answer.json()["last_activity"].replace("Z", "+00:00"))


@pytest.fixture(params=[True, False], ids=["counts", "does-not-count"])
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[JupyterProcess, dict, bool]]:
    jupyter = fake_jupyter(tmp_path, f"--ModelDeployApp.endpoint_activity={request.param}",
                           "--ModelDeployApp.endpoint_activity_check_s=0.2")
    client = jupyter.client()
    record = client.wait(client.launch(fake_deployment("activity", api_key=KEY))["id"], timeout=60)
    yield jupyter, record, request.param
    jupyter.stop()


def test_endpoint_requests_are_the_servers_activity_where_the_setting_says(
        server: tuple[JupyterProcess, dict, bool]) -> None:
    jupyter, record, counts = server
    time.sleep(1.0)  # past the launch's own REST calls and the checks after them
    before = last_activity(jupyter)
    time.sleep(0.5)
    sent = datetime.now(timezone.utc)
    answer = httpx.post(record["api_base"] + "/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}, timeout=30)
    done = datetime.now(timezone.utc)
    assert answer.status_code == 200
    if counts:
        assert wait_until(lambda: last_activity(jupyter) >= sent, timeout=10), "the request was not activity"
    time.sleep(1.0)  # five checks more
    seen = last_activity(jupyter)
    # While in flight the request is activity either way (a check may have seen it); nothing after it moves it on
    # (the server takes in the worker's report of its end a few ms after the client may have had the answer).
    assert seen <= done + timedelta(seconds=0.3), (seen, done)
    if not counts:
        assert seen == before or seen >= sent, "only a check during the request may move it"
