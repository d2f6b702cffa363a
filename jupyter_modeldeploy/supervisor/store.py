"""SQLite store of deployments: configuration, status history and timestamps.

The file lives in the extension's state directory with owner-only permissions, because the
stored configuration keeps the secrets a relaunch needs.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    config TEXT NOT NULL,
    route TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    history TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    stopped_at REAL,
    exit_code INTEGER,
    last_activity_at REAL,
    api_key_hash TEXT
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    name TEXT,
    hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    deployment_id TEXT,
    project TEXT,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL
);
"""


@dataclass
class StoredDeployment:
    """One row of the deployments table."""

    id: str
    name: str
    kind: str
    config: dict[str, Any]  # with secrets: a relaunch needs them
    route: str
    status: str
    status_reason: str | None
    history: list[dict[str, Any]] = field(default_factory=list)
    created_at: float = 0.0
    started_at: float | None = None
    stopped_at: float | None = None
    exit_code: int | None = None
    last_activity_at: float | None = None
    api_key_hash: str | None = None  # the fixed api_key is kept only as a hash


class Store:
    """Thread-safe access to the SQLite file."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if new:
            os.chmod(path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def save(self, row: StoredDeployment) -> None:
        """Insert or replace a deployment."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO deployments VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    row.id, row.name, row.kind, json.dumps(row.config), row.route, row.status,
                    row.status_reason, json.dumps(row.history), row.created_at, row.started_at,
                    row.stopped_at, row.exit_code, row.last_activity_at, row.api_key_hash,
                ),
            )

    def delete(self, deployment_id: str) -> None:
        """Forget a deployment (and its deployment-scoped tokens)."""
        with self._lock:
            self._db.execute("DELETE FROM deployments WHERE id = ?", (deployment_id,))
            self._db.execute("DELETE FROM tokens WHERE deployment_id = ?", (deployment_id,))

    def load_all(self) -> list[StoredDeployment]:
        """Every stored deployment, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM deployments ORDER BY created_at").fetchall()
        return [
            StoredDeployment(
                id=r[0], name=r[1], kind=r[2], config=json.loads(r[3]), route=r[4], status=r[5],
                status_reason=r[6], history=json.loads(r[7]), created_at=r[8], started_at=r[9],
                stopped_at=r[10], exit_code=r[11], last_activity_at=r[12], api_key_hash=r[13],
            )
            for r in rows
        ]

    # Tokens -----------------------------------------------------------------------------

    def add_token(self, row: dict[str, Any]) -> None:
        """Store a token's hash and scope."""
        with self._lock:
            self._db.execute(
                "INSERT INTO tokens VALUES (:id,:name,:hash,:prefix,:deployment_id,:project,"
                ":created_at,:expires_at,:revoked_at)",
                row,
            )

    def tokens(self) -> list[dict[str, Any]]:
        """Every token row."""
        with self._lock:
            cur = self._db.execute("SELECT * FROM tokens ORDER BY created_at")
            names = [c[0] for c in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    def revoke_token(self, token_id: str, at: float) -> bool:
        """Mark a token revoked; False when there is no such live token."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (at, token_id)
            )
            return cur.rowcount > 0
