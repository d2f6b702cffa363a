"""A deployment's `share_with` through the owner's REST API, on a server outside a JupyterHub.

Outside a Hub the settings are kept (and travel with export and clone) but there is no share page,
and the routes only the Hub's share service may call answer 404; bad names and models get a 4xx that
names them, and the stored settings stay as they were.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_server import fake_deployment, fake_jupyter
from tests.support.jupyter import JupyterProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProcess]:
    jupyter = fake_jupyter(tmp_path_factory.mktemp("share-settings"))
    yield jupyter
    jupyter.stop()


@pytest.fixture(scope="module")
def record(server: JupyterProcess) -> Iterator[dict]:
    client = server.client()
    launched = client.launch(fake_deployment("shared-settings", share_with={"users": ["Bob"], "role": "read"}))
    yield client.wait(launched["id"], timeout=60)
    client.delete(launched["id"])


def test_the_share_is_kept_and_shown_with_no_page_outside_a_hub(server: JupyterProcess, record: dict) -> None:
    state = server.api("GET", f"deployments/{record['id']}/share").json()
    assert state["hub"] is False and state["share_url"] is None and state["holders"] == []
    assert state["share_with"]["users"] == ["bob"] and state["share_with"]["role"] == "read"

    changed = server.api("PUT", f"deployments/{record['id']}/share",
                         json={"groups": ["ml-team"], "priority": "batch", "quotas": {"requests_per_minute": 30}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["share_with"]["groups"] == ["ml-team"] and changed.json()["share_with"]["users"] == []
    exported = server.api("GET", f"deployments/{record['id']}/export").json()
    assert exported["share_with"]["groups"] == ["ml-team"]
    assert exported["share_with"]["quotas"]["requests_per_minute"] == 30


@pytest.mark.parametrize(("body", "status", "named"), [
    ({"users": ["bad name"]}, 422, "users.0"),
    ({"groups": "ml-team"}, 422, "groups"),
    ({"role": "admin"}, 422, "role"),
    ({"models": ["no-such-model"]}, 400, "no-such-model"),
    ({"users": ["bob"], "unknown": 1}, 422, "unknown"),
])
def test_a_bad_share_is_refused_by_name_and_changes_nothing(server: JupyterProcess, record: dict, body: dict,
                                                            status: int, named: str) -> None:
    before = server.api("GET", f"deployments/{record['id']}/share").json()["share_with"]
    refused = server.api("PUT", f"deployments/{record['id']}/share", json=body)
    assert refused.status_code == status, refused.text
    assert named in refused.text
    assert server.api("GET", f"deployments/{record['id']}/share").json()["share_with"] == before


def test_the_share_service_routes_do_not_exist_outside_a_hub(server: JupyterProcess, record: dict) -> None:
    person = {"user": "bob", "groups": []}
    for method, path, body in (("POST", "hub-share/offers", person), ("GET", "hub-share/holders", None),
                               ("POST", "hub-share/keys", {**person, "deployment": record["id"]}),
                               ("POST", "hub-share/members", {"members": {"bob": None}})):
        answer = server.api(method, path, json=body)
        assert answer.status_code == 404, (path, answer.text)
        assert "JupyterHub" in answer.json()["error"]
    assert server.api("GET", "tokens").json()["tokens"] == [] or all(
        t["hub_user"] is None for t in server.api("GET", "tokens").json()["tokens"])


def test_the_client_shares_and_reads_back(server: JupyterProcess, record: dict) -> None:
    client = server.client()
    state = client.set_share(record["id"], users=["Carol"], role="read", quotas={"max_in_flight": 2})
    assert state["share_with"]["users"] == ["carol"] and state["share_with"]["quotas"]["max_in_flight"] == 2
    assert client.share(record["name"])["share_with"] == state["share_with"]


def test_the_magic_shares_and_says_there_is_no_page_here(server: JupyterProcess, record: dict,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from jupyter_modeldeploy.magics import DeployMagicError, register

    ip = InteractiveShell.instance()
    try:
        register(ip, client=server.client())
        state = ip.run_line_magic("deploy", f"share {record['name']} users=bob,carol groups=ml priority=batch "
                                            "requests_per_minute=30")
        assert state["share_with"]["users"] == ["bob", "carol"] and state["share_with"]["quotas"]["requests_per_minute"] == 30
        out = capsys.readouterr().out
        assert "shared with bob, carol, group ml: inference keys, batch, requests_per_minute 30" in out
        assert "does not run under a JupyterHub" in out
        with pytest.raises(DeployMagicError, match=r"users\.0"):
            ip.run_line_magic("deploy", f"share {record['name']} users=bad!name")
    finally:
        InteractiveShell.clear_instance()
