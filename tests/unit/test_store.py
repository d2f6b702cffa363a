"""The deployment store: reads files older versions wrote, migrates them, survives bad rows and damage."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from jupyter_modeldeploy.gateway.tokens import TokenRegistry
from jupyter_modeldeploy.supervisor import Status, Supervisor
from jupyter_modeldeploy.supervisor.store import MIGRATIONS, Store

FIXTURE_V1 = Path(__file__).parents[1] / "fixtures" / "state-v1.sqlite"


@pytest.fixture
def v1_state(tmp_path: Path) -> Path:
    """A state folder holding the store that version 0.1.0 wrote."""
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(FIXTURE_V1, state / "deployments.sqlite")
    return state


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_a_v1_file_is_migrated_to_the_latest_version(v1_state: Path) -> None:
    path = v1_state / "deployments.sqlite"
    assert user_version(path) == 0
    Store(path).close()
    assert user_version(path) == len(MIGRATIONS)


def test_a_v1_file_shows_every_deployment_and_token(v1_state: Path) -> None:
    sup = Supervisor(v1_state)
    sup.load()
    by_name = {d.name: d for d in sup.list()}
    assert set(by_name) == {"chat-smol", "embed-mini", "qwen"}
    assert by_name["chat-smol"].config.project == "alpha"
    assert by_name["chat-smol"].api_key_hash is not None
    assert by_name["qwen"].route == "qwen-route"
    # It was serving when the old server went away: listed as stopped now.
    assert by_name["chat-smol"].status is Status.STOPPED
    tokens = TokenRegistry(sup.store).list()
    assert [(t.name, t.project, t.deployment_id is not None, t.revoked_at is not None) for t in tokens] == [
        ("ci", None, True, False), (None, "alpha", False, False), ("old", None, True, True),
    ]
    assert sup.store.report() == {"recovered": None, "skipped": []}
    sup.store.close()


def test_migrations_run_in_order_once(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Store(path).close()
    extra = [*MIGRATIONS, "ALTER TABLE deployments ADD COLUMN note TEXT"]
    store = Store(path, migrations=extra)
    store.close()
    assert user_version(path) == len(extra)
    Store(path, migrations=extra).close()  # nothing left to run: no "duplicate column" error
    columns = [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(deployments)")]
    assert columns[-1] == "note"


def test_bad_rows_are_skipped_and_reported(v1_state: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = v1_state / "deployments.sqlite"
    db = sqlite3.connect(path)
    db.execute("UPDATE deployments SET config = '{not json' WHERE name = 'qwen'")
    db.execute("UPDATE deployments SET status = 'bogus' WHERE name = 'embed-mini'")
    db.execute("UPDATE tokens SET created_at = 'yesterday' WHERE name = 'ci'")
    db.commit()
    db.close()
    sup = Supervisor(v1_state)
    sup.load()
    tokens = TokenRegistry(sup.store)
    assert [d.name for d in sup.list()] == ["chat-smol"]
    assert [t.project for t in tokens.list()] == ["alpha", None]
    skipped = sup.store.report()["skipped"]
    assert sorted(s["table"] for s in skipped) == ["deployments", "deployments", "tokens"]
    reasons = " ".join(s["reason"] for s in skipped)
    assert "config" in reasons and "status" in reasons and "created_at" in reasons
    assert sum("skipping" in r.message for r in caplog.records) == 3
    sup.store.close()


def test_a_config_that_no_longer_validates_is_reported(v1_state: Path) -> None:
    path = v1_state / "deployments.sqlite"
    db = sqlite3.connect(path)
    db.execute("""UPDATE deployments SET config = json_set(config, '$.threads', 'many') WHERE name = 'chat-smol'""")
    db.commit()
    db.close()
    sup = Supervisor(v1_state)
    sup.load()
    assert "chat-smol" not in [d.name for d in sup.list()]
    [skipped] = sup.store.report()["skipped"]
    assert skipped["table"] == "deployments" and "threads" in skipped["reason"]
    sup.store.close()


@pytest.mark.parametrize("damage", [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 8000])
def test_an_unreadable_store_is_moved_aside(tmp_path: Path, damage: bytes, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "deployments.sqlite"
    path.write_bytes(damage)
    store = Store(path)
    assert store.load_all() == [] and store.tokens() == []
    report = store.report()
    assert report["recovered"] is not None
    moved = tmp_path / report["recovered"]["moved_to"]
    assert moved.name.startswith("deployments.sqlite.unreadable-")
    assert moved.read_bytes() == damage
    assert "moved aside" in report["recovered"]["reason"]
    assert any("moved aside" in r.message for r in caplog.records)
    store.close()
    assert user_version(path) == len(MIGRATIONS)  # a fresh store in its place


def test_a_store_from_a_newer_version_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "deployments.sqlite"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    db.commit()
    db.close()
    store = Store(path)
    recovered = store.report()["recovered"]
    assert recovered is not None and "newer" in recovered["reason"]
    assert user_version(tmp_path / recovered["moved_to"]) == len(MIGRATIONS) + 5
    store.close()


def test_a_table_from_elsewhere_is_reported_not_fatal(tmp_path: Path) -> None:
    """A file with a `tokens` table of other columns: its rows are skipped, the rest works."""
    path = tmp_path / "deployments.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE tokens (id TEXT, secret TEXT)")
    db.execute("INSERT INTO tokens VALUES ('x', 'y')")
    db.commit()
    db.close()
    store = Store(path)
    assert store.tokens() == []
    [skipped] = store.report()["skipped"]
    assert skipped["id"] == "x" and "column" in skipped["reason"]
    store.close()


def test_an_infinite_expiry_stored_by_an_older_version_reads_as_no_expiry(v1_state: Path) -> None:
    """0.1.0 accepted `expires_in_s: Infinity` and stored inf, which no JSON answer can carry."""
    path = v1_state / "deployments.sqlite"
    db = sqlite3.connect(path)
    db.execute("UPDATE tokens SET expires_at = 9e999 WHERE name = 'ci'")
    db.commit()
    db.close()
    store = Store(path)
    [ci] = [t for t in store.tokens() if t["name"] == "ci"]
    assert ci["expires_at"] is None
    assert TokenRegistry(store).lookup("nothing") is None and store.report()["skipped"] == []
    store.close()


def test_a_keys_changes_and_its_holders_hub_facts_survive_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite")
    _, info = TokenRegistry(store).create(deployment_id="d-1", name="bob", hub_user="bob", hub_groups=["team"])
    TokenRegistry(store).update(info.id, priority="batch", hub_groups=["team", "ml"])
    again = TokenRegistry(Store(tmp_path / "state.sqlite")).get(info.id)
    assert (again.priority, again.hub_user, again.hub_groups) == ("batch", "bob", ("team", "ml"))
