"""`jupyter modeldeploy token`: scopes, roles, models and quotas reach the REST client as it sends them."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_modeldeploy.cli import build_parser, cmd_token


class Recorder:
    """Records the token calls the CLI makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def create_token(self, **body: Any) -> dict[str, Any]:
        self.calls.append(("create", body))
        return {"id": "t-1", "token": "md-shown-once"}

    def update_token(self, token_id: str, **changes: Any) -> dict[str, Any]:
        self.calls.append(("update", {"id": token_id, **changes}))
        return {"id": token_id}


def run(client: Recorder, *argv: str) -> None:
    cmd_token(client, build_parser().parse_args(["token", *argv]))  # type: ignore[arg-type]


def test_create_with_role_models_and_quotas(capsys: pytest.CaptureFixture[str]) -> None:
    client = Recorder()
    run(client, "create", "--deployment", "smol", "--role", "read", "--model", "a", "--model", "b",
        "--requests-per-minute", "60", "--daily-tokens", "1000")
    kind, body = client.calls[-1]
    assert kind == "create" and body["role"] == "read" and body["models"] == ["a", "b"]
    assert body["quotas"] == {"requests_per_minute": 60, "daily_tokens": 1000}
    assert "md-shown-once" in capsys.readouterr().out
    run(client, "create", "--project", "p")
    assert client.calls[-1][1]["quotas"] is None and client.calls[-1][1]["models"] is None


def test_update_changes_only_what_is_given() -> None:
    client = Recorder()
    run(client, "update", "t-1", "--tokens-per-minute", "500")
    assert client.calls[-1] == ("update", {"id": "t-1", "quotas": {"tokens_per_minute": 500}})
    run(client, "update", "t-1", "--no-quotas", "--no-expiry", "--name", "demo")
    assert client.calls[-1] == ("update", {"id": "t-1", "name": "demo", "no_expiry": True, "quotas": {}})
