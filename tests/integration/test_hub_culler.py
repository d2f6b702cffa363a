"""JupyterHub's real idle culler (`jupyterhub-idle-culler`) and a server that serves endpoints.

Endpoint traffic counts as the server's activity where `endpoint_activity` says so (the default), so a
server whose endpoint is in use is not culled; without it only Jupyter's own use counts, yet a request
in flight (an open stream) always keeps the server. A culled server's engines stop with it (nothing is
left running) and its deployments come back by their restart policy when the server starts again.

The culler reads the activity each server reports (`JUPYTERHUB_ACTIVITY_INTERVAL`, 1 s here); the Hub's
own count of the traffic its proxy sees (`last_activity_interval`) is left out, so what keeps a server is
its own report alone.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from tests.support.fake_server import fake_deployment
from tests.support.hub import Hub, chp_program

pytestmark = pytest.mark.integration

CULL_AFTER_S = 10


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    if not chp_program().exists():
        pytest.fail(f"configurable-http-proxy is not installed at {chp_program()}: run 'make hub-proxy'")
    culler = [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={CULL_AFTER_S}", "--cull-every=2"]
    running = Hub(tmp_path_factory.mktemp("hub-culler"), engine_args=("--token-s", "0.05"), settings={
        "JupyterHub.services": [{"name": "idle-culler", "command": culler}],
        "JupyterHub.load_roles": [{"name": "idle-culler", "services": ["idle-culler"],
                                   "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]}],
        "JupyterHub.last_activity_interval": 3600,
        "Spawner.args": ["--ModelDeployApp.endpoint_activity_check_s=1"],
    }, environment={"JUPYTERHUB_ACTIVITY_INTERVAL": "1"}).start()
    yield running
    running.stop()


def serving(hub: Hub, user: str, *, endpoint_activity: bool) -> tuple[dict, str, str]:
    """A user's server (`endpoint_activity` in their own Jupyter configuration) with a deployment serving;
    (its record, a key to it, the user's REST base)."""
    config = hub.user_home(user) / ".jupyter" / "jupyter_server_config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"ModelDeployApp": {"endpoint_activity": endpoint_activity}}))
    as_user = {"Authorization": f"token {hub.user_server(user)}"}
    rest = f"{hub.url}/user/{user}/api/modeldeploy"
    launched = httpx.post(f"{rest}/deployments", json=fake_deployment(f"{user}-model"), headers=as_user, timeout=60)
    assert launched.status_code == 201, launched.text
    record = wait_serving(rest, launched.json()["id"], as_user)
    key = httpx.post(f"{rest}/tokens", json={"deployment": record["id"]}, headers=as_user, timeout=30).json()["token"]
    return record, key, rest


def wait_serving(rest: str, deployment_id: str, headers: dict[str, str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        record = httpx.get(f"{rest}/deployments/{deployment_id}", headers=headers, timeout=30).json()
        if record["status"] in ("active", "idle"):
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.5)


def chat(record: dict, key: str, max_tokens: int = 2, stream: bool = False) -> httpx.Response:
    return httpx.post(f"{record['api_base']}/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": record["models"][0]["name"], "messages": [], "max_tokens": max_tokens,
                            "stream": stream}, timeout=120)


def models(record: dict, key: str) -> httpx.Response:
    return httpx.get(f"{record['api_base']}/models", headers={"Authorization": f"Bearer {key}"}, timeout=120)


def running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.5)


def test_endpoint_traffic_keeps_a_server_only_where_it_counts_and_a_culled_one_leaves_nothing(hub: Hub) -> None:
    stop = threading.Event()
    codes: dict[str, list[int]] = {"busy": [], "quiet": []}
    targets: dict[str, tuple[dict, str]] = {}

    def traffic() -> None:  # a request to each endpoint every 2 s, from the moment it serves
        while not stop.is_set():
            for user, (record, key) in list(targets.items()):
                if hub.server_of(user):
                    # The quiet server's requests end at once: one in flight when its activity is checked keeps any
                    # server (by design), and paced chats under a loaded machine would seldom leave it 10 s clear.
                    response = chat(record, key) if user == "busy" else models(record, key)
                    codes[user].append(response.status_code)
            stop.wait(2)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        busy, busy_key, _ = serving(hub, "busy", endpoint_activity=True)
        targets["busy"] = (busy, busy_key)
        quiet, quiet_key, quiet_rest = serving(hub, "quiet", endpoint_activity=False)
        targets["quiet"] = (quiet, quiet_key)
        root = psutil.Process(quiet["pid"])
        quiet_processes = [root, *root.children(recursive=True)]  # the engine and what runs it
        until(lambda: not hub.server_of("quiet"), CULL_AFTER_S + 30, "the quiet server culled")
        assert hub.server_of("busy").get("ready"), "a server whose endpoint is in use was culled"
        time.sleep(CULL_AFTER_S / 2)
        assert hub.server_of("busy").get("ready"), "a server whose endpoint is in use was culled"
    finally:
        stop.set()
        sender.join(30)
    assert set(codes["busy"]) == {200} and 200 in codes["quiet"]
    until(lambda: not any(running(p) for p in quiet_processes), 30, "the culled server's engine processes ended")
    # Started again, the server brings its deployment back (restart: always).
    hub.spawn("quiet")
    as_quiet = {"Authorization": f"token {hub.user_token('quiet')}"}
    back = wait_serving(quiet_rest, quiet["id"], as_quiet)
    assert chat(back, quiet_key).status_code == 200


def test_a_request_in_flight_keeps_a_server_whose_traffic_does_not_count(hub: Hub) -> None:
    record, key, _ = serving(hub, "streamer", endpoint_activity=False)
    answer: dict[str, httpx.Response] = {}
    started = time.monotonic()
    long = threading.Thread(target=lambda: answer.update(done=chat(record, key, max_tokens=500, stream=True)))
    long.start()  # 500 tokens at 50 ms: 25 s, more than twice the culler's limit
    long.join(120)
    assert answer["done"].status_code == 200 and "[DONE]" in answer["done"].text
    assert time.monotonic() - started > 2 * CULL_AFTER_S
    assert hub.server_of("streamer").get("ready"), "the server was culled under an open stream"
    until(lambda: not hub.server_of("streamer"), CULL_AFTER_S + 30, "the server culled once the stream ended")
