"""A damaged or partly bad deployment store does not turn the extension off."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.support.jupyter import JupyterProcess

pytestmark = pytest.mark.integration

FIXTURE_V1 = Path(__file__).parents[1] / "fixtures" / "state-v1.sqlite"


def test_an_unreadable_store_is_moved_aside_and_the_server_starts_empty(tmp_path: Path) -> None:
    server = JupyterProcess(tmp_path)
    server.state_dir.mkdir(parents=True)
    (server.state_dir / "deployments.sqlite").write_bytes(b"garbage, not SQLite" * 50)
    server.start()
    try:
        status = server.api("GET", "status").json()
        recovered = status["store"]["recovered"]
        assert recovered["moved_to"].startswith("deployments.sqlite.unreadable-")
        assert (server.state_dir / recovered["moved_to"]).read_bytes() == b"garbage, not SQLite" * 50
        assert server.api("GET", "deployments").json() == {"deployments": []}
        assert "modeldeploy: the deployment store could not be read" in server.log_tail(200)
    finally:
        server.stop()


def test_bad_rows_are_skipped_and_the_rest_served(tmp_path: Path) -> None:
    server = JupyterProcess(tmp_path)
    server.state_dir.mkdir(parents=True)
    path = server.state_dir / "deployments.sqlite"
    shutil.copy(FIXTURE_V1, path)
    db = sqlite3.connect(path)
    db.execute("UPDATE deployments SET config = 'not json' WHERE name = 'qwen'")
    db.commit()
    db.close()
    server.start()
    try:
        names = sorted(d["name"] for d in server.api("GET", "deployments").json()["deployments"])
        assert names == ["chat-smol", "embed-mini"]
        [skipped] = server.api("GET", "status").json()["store"]["skipped"]
        assert skipped["table"] == "deployments" and "config" in skipped["reason"]
        assert len(server.api("GET", "tokens").json()["tokens"]) == 3
        log = server.log_tail(200)
        assert "skipping stored deployments row" in log
        assert "modeldeploy: 1 stored row(s) could not be read" in log
    finally:
        server.stop()
