"""The share desk: who may hold a shared key, one key per person and deployment, and revocation when
the share or the Hub's groups no longer name someone."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from jupyter_modeldeploy.config.sharing import ShareOptions
from jupyter_modeldeploy.gateway.tokens import TokenRegistry
from jupyter_modeldeploy.server_ext.sharing import NotShared, ShareDesk
from jupyter_modeldeploy.supervisor.store import Store
from jupyter_modeldeploy.widgets.keyusage import key_label


def deployment(dep_id: str, **share: Any) -> Any:
    return SimpleNamespace(id=dep_id, name=dep_id, config=SimpleNamespace(share_with=ShareOptions(**share)))


@pytest.fixture
def desk(tmp_path: Path) -> ShareDesk:
    return ShareDesk(TokenRegistry(Store(tmp_path / "state.sqlite")))


def test_a_key_carries_the_share_and_replaces_the_holders_old_one(desk: ShareDesk) -> None:
    dep = deployment("d-1", users=["bob"], role="read", priority="batch", models=["m"],
                     quotas={"requests_per_minute": 5})
    _, first = desk.mint(dep, "bob", [])
    _, second = desk.mint(dep, "bob", ["x"])
    assert desk.tokens.get(first.id).revoked_at is not None
    assert [t.id for t in desk.holders("d-1")] == [second.id]
    assert (second.role, second.priority, second.models, second.hub_user, second.hub_groups) == (
        "read", "batch", ("m",), "bob", ("x",))
    assert second.quotas is not None and second.quotas.requests_per_minute == 5


def test_nobody_else_gets_a_key(desk: ShareDesk) -> None:
    with pytest.raises(NotShared):
        desk.mint(deployment("d-1", users=["bob"], groups=["ml"]), "dave", ["other"])
    assert desk.holders() == []


def test_a_new_share_revokes_whoever_it_no_longer_names(desk: ShareDesk) -> None:
    dep = deployment("d-1", users=["bob"], groups=["ml"])
    desk.mint(dep, "bob", [])
    desk.mint(dep, "carol", ["ml"])
    revoked = desk.reshare(dep, ShareOptions(groups=["ml"]))
    assert [t.hub_user for t in revoked] == ["bob"]
    assert [t.hub_user for t in desk.holders()] == ["carol"]


def test_the_hubs_word_revokes_leavers_and_the_gone_and_updates_the_rest(desk: ShareDesk) -> None:
    dep = deployment("d-1", users=["erin"], groups=["ml"])
    for user in ("carol", "dave", "erin"):
        desk.mint(dep, user, ["ml"])
    revoked = desk.members([dep], {"carol": [], "dave": None, "erin": ["ops"]})
    assert sorted(t.hub_user or "" for t in revoked) == ["carol", "dave"]
    (erin,) = desk.holders()
    assert erin.hub_user == "erin" and erin.hub_groups == ("ops",)  # named by name: kept, groups updated


def test_keys_of_a_deployment_that_is_gone_end_at_the_next_check(desk: ShareDesk) -> None:
    desk.mint(deployment("d-1", users=["bob"]), "bob", [])
    assert [t.hub_user for t in desk.members([], {"bob": []})] == ["bob"]


def test_the_usage_table_names_a_shared_key_by_its_holder() -> None:
    assert key_label({"key_id": "t-1", "key_name": "bob", "hub_user": "bob"}) == "bob (Hub, t-1)"
    assert key_label({"key_id": "t-2", "key_name": "app"}) == "app (t-2)"


def test_a_new_share_changes_what_the_remaining_keys_may_do(desk: ShareDesk, tmp_path: Path) -> None:
    dep = deployment("d-1", users=["bob"], models=["a", "b"], quotas={"requests_per_minute": 50})
    _, key = desk.mint(dep, "bob", [])
    desk.reshare(dep, ShareOptions(users=["bob"], role="read", models=["a"], priority="batch",
                                   quotas={"requests_per_minute": 5}))
    changed = desk.tokens.get(key.id)
    assert (changed.role, changed.models, changed.priority) == ("read", ("a",), "batch")
    assert changed.quotas is not None and changed.quotas.requests_per_minute == 5
    desk.reshare(dep, ShareOptions(users=["bob"]))
    reread = TokenRegistry(Store(tmp_path / "state.sqlite")).get(key.id)  # as written to the store
    assert (reread.role, reread.models, reread.priority, reread.quotas) == ("inference", None, "interactive", None)
