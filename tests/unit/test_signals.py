"""Changes as signals: every listener hears each change with its kind; a failing listener stops nothing.

Deleting a deployment drops its keys through a listener (`server_ext.cleanup`), not by a call the
REST handler must remember to make.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from jupyter_modeldeploy.config import parse_config
from jupyter_modeldeploy.gateway.tokens import TokenChange, TokenRegistry
from jupyter_modeldeploy.server_ext import cleanup, jupyter_ai
from jupyter_modeldeploy.supervisor import Supervisor
from jupyter_modeldeploy.supervisor.signals import DeploymentChange, Signal


def test_every_listener_hears_in_order_and_a_failing_one_stops_nothing(caplog: pytest.LogCaptureFixture) -> None:
    signal: Signal[int] = Signal("numbers")
    heard: list[tuple[str, int]] = []

    def broken(n: int) -> None:
        raise RuntimeError("a listener's bug")

    signal.connect(lambda n: heard.append(("first", n)))
    signal.connect(broken)
    disconnect = signal.connect(lambda n: heard.append(("last", n)))
    with caplog.at_level(logging.ERROR):
        signal.send(1)
    disconnect()
    signal.send(2)
    assert heard == [("first", 1), ("last", 1), ("first", 2)]
    assert "a listener of numbers failed" in caplog.text


def test_key_changes_carry_their_kind(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "state")
    tokens = TokenRegistry(sup.store)
    heard: list[TokenChange] = []
    tokens.changes.connect(heard.append)
    _, info = tokens.create(deployment_id="d1")
    tokens.update(info.id, name="renamed")
    tokens.revoke(info.id)
    tokens.forget_deployment("d1")
    assert [(c.kind, c.token.id) for c in heard] == [(k, info.id) for k in ("created", "changed", "revoked", "dropped")]
    assert heard[1].token.name == "renamed" and heard[2].token.revoked_at is not None
    sup.store.close()


def test_a_deleted_deployment_takes_its_keys_through_the_listener(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jupyter_ai, "config_path", lambda: tmp_path / "jupyter_ai" / "config.json")
    sup = Supervisor(tmp_path / "state")
    tokens = TokenRegistry(sup.store)
    heard: list[DeploymentChange] = []
    sup.changes.connect(heard.append)
    sup.changes.connect(lambda change: (_ for _ in ()).throw(RuntimeError("a listener's bug")))
    sup.changes.connect(lambda change: cleanup.clean_up_after_delete(tokens, change))

    async def scenario() -> None:
        dep = await sup.launch(parse_config({"kind": "llamacpp", "name": "gone", "model": "m.gguf"}), start=False)
        key, _ = tokens.create(deployment_id=dep.id)
        assert tokens.lookup(key) is not None
        await sup.delete(dep.id)
        assert tokens.lookup(key) is None  # dropped by the listener, despite the one before it failing
        assert dep.id not in sup.deployments

    asyncio.run(scenario())
    assert [c.kind for c in heard] == ["created", "deleted"]
    sup.store.close()
