"""Scoped keys end to end: a real Jupyter server, the fake engine, the official `openai` client.

Roles (`inference`, `read`), model scopes, labels, expiry changed after creation, last-used times
written in batches, revocation for the next request, and all of it kept across a restart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.fake_server import fake_deployment, fake_jupyter
from tests.support.jupyter import JupyterProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProcess]:
    jupyter = fake_jupyter(tmp_path_factory.mktemp("keys"))
    yield jupyter
    jupyter.stop()


@pytest.fixture(scope="module")
def deps(server: JupyterProcess) -> Iterator[tuple[dict, dict]]:
    client = server.client()
    a = client.launch(fake_deployment("keys-a", project="team-a"))
    b = client.launch(fake_deployment("keys-b", project="team-b"))
    yield client.wait(a["id"], timeout=60), client.wait(b["id"], timeout=60)
    client.delete(a["id"])
    client.delete(b["id"])


def model_of(record: dict) -> str:
    return record["models"][0]["name"]


def chat(record: dict, key: str, model: str | None = None) -> openai.types.chat.ChatCompletion:
    client = openai.OpenAI(base_url=record["api_base"], api_key=key, max_retries=0)
    return client.chat.completions.create(model=model or model_of(record), messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=3)


def test_a_read_key_reads_but_never_infers(server: JupyterProcess, deps: tuple[dict, dict]) -> None:
    a, b = deps
    read = server.client().create_token(deployment=a["id"], role="read", name="dashboard")
    assert read["role"] == "read" and read["name"] == "dashboard"
    with pytest.raises(openai.PermissionDeniedError) as refused:
        chat(a, read["token"])
    assert "role is 'read'" in str(refused.value)
    models = openai.OpenAI(base_url=a["api_base"], api_key=read["token"], max_retries=0).models.list()
    assert [m.id for m in models.data] == [model_of(a)]
    base = a["api_base"].removesuffix("/v1")
    metrics = httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {read['token']}"})
    assert metrics.status_code == 200 and f'deployment_id="{a["id"]}"' in metrics.text
    assert f'deployment_id="{b["id"]}"' not in metrics.text  # only its own deployment's samples
    assert httpx.get(base + "/metrics").status_code == 401
    other = httpx.get(b["api_base"].removesuffix("/v1") + "/metrics", headers={"Authorization": f"Bearer {read['token']}"})
    assert other.status_code == 403 and f"deployment {a['id']}" in other.json()["error"]["message"]


def test_scopes_name_themselves_when_they_refuse(server: JupyterProcess, deps: tuple[dict, dict]) -> None:
    a, b = deps
    client = server.client()
    project = client.create_token(project="team-a")
    assert chat(a, project["token"]).usage.completion_tokens == 3
    with pytest.raises(openai.PermissionDeniedError) as wrong_project:
        chat(b, project["token"])
    assert "project team-a" in str(wrong_project.value)
    only_other = client.create_token(deployment=a["id"], models=["some-other-model"])
    assert only_other["models"] == ["some-other-model"]
    with pytest.raises(openai.PermissionDeniedError) as wrong_model:
        chat(a, only_other["token"])
    assert "scoped to the models some-other-model" in str(wrong_model.value)
    only_this = client.create_token(deployment=a["id"], models=[model_of(a)])
    assert chat(a, only_this["token"]).choices[0].message.content == "xxx"


def test_label_expiry_last_use_and_revocation(server: JupyterProcess, deps: tuple[dict, dict]) -> None:
    a, _ = deps
    client = server.client()
    made = client.create_token(deployment=a["id"], name="demo app")
    assert made["last_used_at"] is None and made["created_at"] <= time.time()
    before = time.time()
    chat(a, made["token"])
    deadline = time.monotonic() + 10
    while (listed := next(t for t in client.tokens() if t["id"] == made["id"]))["last_used_at"] is None:
        assert time.monotonic() < deadline, "last_used_at never set"
        time.sleep(0.2)
    assert listed["last_used_at"] >= before and "token" not in listed
    changed = client.update_token(made["id"], name="renamed", expires_in_s=0.5)
    assert changed["name"] == "renamed" and changed["expires_at"] < time.time() + 1
    time.sleep(0.7)
    with pytest.raises(openai.AuthenticationError):
        chat(a, made["token"])
    assert client.update_token(made["id"], no_expiry=True)["expires_at"] is None
    assert chat(a, made["token"]).usage.completion_tokens == 3
    client.revoke_token(made["id"])
    with pytest.raises(openai.AuthenticationError):
        chat(a, made["token"])


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), [
    ("POST", "tokens", {"project": "p", "role": "admin"}, 422, "role"),
    ("POST", "tokens", {"project": "p", "models": []}, 422, "models"),
    ("POST", "tokens", {"project": "p", "models": [7]}, 422, "models.0"),
    ("PATCH", "tokens/t-nope", {"name": "x"}, 404, None),
    ("PATCH", "tokens/{id}", {"expires_in_s": 10, "no_expiry": True}, 422, None),
    ("PATCH", "tokens/{id}", {"role": "read"}, 422, "role"),
])
def test_bad_key_requests_are_4xx_naming_the_field(server: JupyterProcess, method: str, path: str, body: dict,
                                                    status: int, field: str | None) -> None:
    token_id = server.client().create_token(project="p")["id"]
    response = server.api(method, path.format(id=token_id), json=body)
    assert response.status_code == status, response.text
    if field is not None:
        assert field in [e["field"] for e in response.json()["errors"]]
    assert "md-" not in response.text  # no key value in an error


def test_scopes_survive_a_restart(tmp_path: Path) -> None:
    jupyter = fake_jupyter(tmp_path / "home")
    try:
        client = jupyter.client()
        record = client.wait(client.launch(fake_deployment("keep"))["id"], timeout=60)
        made = client.create_token(deployment=record["id"], role="read", models=[model_of(record)], name="kept")
        models = openai.OpenAI(base_url=record["api_base"], api_key=made["token"], max_retries=0).models.list()
        assert models.data
    finally:
        jupyter.stop()
    again = JupyterProcess(tmp_path / "home", extra_args=jupyter.extra_args).start()
    try:
        kept = next(t for t in again.client().tokens() if t["id"] == made["id"])
        assert (kept["role"], kept["models"], kept["name"]) == ("read", [model_of(record)], "kept")
        assert kept["last_used_at"] is not None  # written before the server stopped
    finally:
        again.stop()
