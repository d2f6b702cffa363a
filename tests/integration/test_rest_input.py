"""REST input that used to answer 500: every one is a 4xx with a JSON body that names the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.jupyter import JupyterProcess

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}
DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 50_000 + b"1" + b"}" * 50_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProcess]:
    proc = JupyterProcess(tmp_path_factory.mktemp("rest-input")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def stored(server: JupyterProcess) -> dict:
    """A deployment created without launching (routes that act on one need it)."""
    config = {"kind": "llamacpp", "name": "stored-only", "model": "models/none.gguf"}
    response = server.api("POST", "import", params={"launch": 0}, json=config)
    assert response.status_code == 201, response.text
    return response.json()


def fields(response: httpx.Response) -> list[str]:
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    return [e["field"] for e in body.get("errors", [])]


def test_get_on_import_is_405_json(server: JupyterProcess) -> None:
    response = server.api("GET", "import")
    assert response.status_code == 405
    assert response.headers["content-type"].startswith("application/json")
    assert "GET" in response.json()["error"]


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["arrays", "objects"])
@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "validate"), ("POST", "deployments"), ("POST", "deployments?dry_run=1"), ("POST", "import"),
        ("POST", "deployments/stored-only/clone"), ("POST", "deployments/stored-only/adapters"), ("POST", "tokens"),
    ],
)
def test_deeply_nested_json_is_400(server: JupyterProcess, stored: dict, method: str, path: str, body: bytes) -> None:
    response = server.api(method, path, content=body, headers=JSON)
    assert response.status_code == 400, response.text
    assert fields(response) == ["(root)"]
    assert "nests" in response.json()["error"]


def test_dry_run_with_an_unknown_home_directory_is_422(server: JupyterProcess) -> None:
    config = {"kind": "llamacpp", "name": "tilde", "model": "~nosuchuser-md/m.gguf"}
    response = server.api("POST", "deployments", params={"dry_run": 1}, json=config)
    assert response.status_code == 422, response.text
    assert fields(response) == ["model"]


@pytest.mark.parametrize(
    "body,field",
    [
        ({"project": "p", "name": 5}, "name"),
        ({"project": "p", "name": ["x"]}, "name"),
        ({"project": False}, "project"),
        ({"project": 7}, "project"),
        ({"project": {"a": 1}}, "project"),
        ({"deployment": 3}, "deployment"),
        ({"project": "p", "expires_in_s": "soon"}, "expires_in_s"),
        ({"project": "p", "expires_in_s": True}, "expires_in_s"),
        ({"project": "p", "expires_in_s": -1}, "expires_in_s"),
        ({"project": "p", "colour": "red"}, "colour"),
    ],
)
def test_token_fields_of_the_wrong_type_are_422(server: JupyterProcess, body: dict, field: str) -> None:
    response = server.api("POST", "tokens", json=body)
    assert response.status_code == 422, response.text
    assert fields(response) == [field]


@pytest.mark.parametrize("number", [b"Infinity", b"-Infinity", b"NaN", b"1e999"])
def test_non_finite_expiry_is_refused_and_tokens_stay_json(server: JupyterProcess, number: bytes) -> None:
    body = b'{"project": "p", "expires_in_s": ' + number + b"}"
    response = server.api("POST", "tokens", content=body, headers=JSON)
    assert response.status_code in (400, 422), response.text
    assert fields(response) == ["expires_in_s"]
    listing = server.api("GET", "tokens")
    assert listing.status_code == 200
    assert isinstance(listing.json()["tokens"], list)


def test_clone_and_adapter_bodies_name_their_fields(server: JupyterProcess, stored: dict) -> None:
    response = server.api("POST", "deployments/stored-only/clone", json={"name": 3})
    assert response.status_code == 422 and fields(response) == ["name"]
    response = server.api("POST", "deployments/stored-only/clone", json={"name": "c", "overrides": []})
    assert response.status_code == 422 and fields(response) == ["overrides"]
    response = server.api("POST", "deployments/stored-only/adapters", json={"name": "a"})
    assert response.status_code == 422 and fields(response) == ["path"]


def test_a_body_that_is_not_json_is_400(server: JupyterProcess) -> None:
    response = server.api("POST", "tokens", content=b"{nope", headers=JSON)
    assert response.status_code == 400
    assert fields(response) == ["(root)"]


def test_valid_token_request_still_works(server: JupyterProcess, tmp_path: Path) -> None:
    response = server.api("POST", "tokens", json={"project": "p", "name": "ok", "expires_in_s": 60})
    assert response.status_code == 201, response.text
    assert response.json()["token"].startswith("md-")
