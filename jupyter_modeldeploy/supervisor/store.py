"""SQLite store of deployments and tokens: named columns, numbered migrations, damage survived.

The file lives in the extension's state directory with owner-only permissions, because the
stored configuration keeps the secrets a relaunch needs.

The schema's version is SQLite's `PRAGMA user_version`: migration N (1-based) takes a file
from version N-1 to N, in one transaction. Files written before migrations existed are
version 0 with version 1's tables already there, so migration 1 only creates what is missing.
Rows are read and written by column name, so a migration that adds a column breaks nothing.

A row that does not decode is skipped and reported (`report()`); a file SQLite cannot read,
or one written by a newer version, is renamed aside with a timestamp and an empty store
takes its place. Either way the extension starts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .state import Status

log = logging.getLogger(__name__)

# Index i holds the SQL that takes the file from version i to i + 1. Append only; never edit.
MIGRATIONS: tuple[str, ...] = (
    # 1: the tables of 0.1.0 (which wrote them without a version number).
    """
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
    """,
    # 2: scoped keys: a role, an optional list of models, the last time a key was used; quotas.
    """
    ALTER TABLE tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'inference';
    ALTER TABLE tokens ADD COLUMN models TEXT;
    ALTER TABLE tokens ADD COLUMN last_used_at REAL;
    ALTER TABLE tokens ADD COLUMN quotas TEXT;
    """,
    # 3: a key's priority class in a deployment's waiting line.
    """
    ALTER TABLE tokens ADD COLUMN priority TEXT NOT NULL DEFAULT 'interactive';
    """,
    # 4: keys teammates got through the Hub's share page: their Hub name and groups.
    """
    ALTER TABLE tokens ADD COLUMN hub_user TEXT;
    ALTER TABLE tokens ADD COLUMN hub_groups TEXT;
    """,
)

TOKEN_COLUMNS = (
    "id", "name", "hash", "prefix", "deployment_id", "project", "created_at", "expires_at", "revoked_at",
    "role", "models", "last_used_at", "quotas", "priority", "hub_user", "hub_groups",
)
TOKEN_ROLES = ("inference", "read")
TOKEN_PRIORITIES = ("interactive", "batch")


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


@dataclass(frozen=True)
class SkippedRow:
    """A stored row that could not be read, and why."""

    table: str
    id: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"table": self.table, "id": self.id, "reason": self.reason}


class RowError(ValueError):
    """A stored row whose columns do not hold what they should."""


def _column(row: sqlite3.Row, name: str) -> Any:
    columns = row.keys()  # `name in row` would look among the values
    if name not in columns:
        raise RowError(f"the table has no {name} column")
    return row[name]


def _row_id(row: sqlite3.Row) -> Any:
    try:
        return _column(row, "id")
    except RowError:
        return None


def _text(row: sqlite3.Row, name: str, *, optional: bool = False) -> str | None:
    value = _column(row, name)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise RowError(f"{name} is {type(value).__name__}, not text")
    return value


def _number(row: sqlite3.Row, name: str, *, optional: bool = False) -> float | None:
    value = _column(row, name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RowError(f"{name} is {type(value).__name__}, not a number")
    if math.isnan(value):
        raise RowError(f"{name} is not a number")
    return float(value)


def _json(row: sqlite3.Row, name: str, kind: type) -> Any:
    try:
        value = json.loads(_text(row, name) or "")
    except ValueError as exc:
        raise RowError(f"{name} is not valid JSON ({exc})") from None
    if not isinstance(value, kind):
        raise RowError(f"{name} is not a JSON {'object' if kind is dict else 'array'}")
    return value


def decode_deployment(row: sqlite3.Row) -> StoredDeployment:
    """A deployments row as a StoredDeployment; RowError names the first bad column."""
    status = _text(row, "status")
    if status not in {s.value for s in Status}:
        raise RowError(f"status {status!r} is not one of {', '.join(s.value for s in Status)}")
    exit_code = _column(row, "exit_code")
    if exit_code is not None and (isinstance(exit_code, bool) or not isinstance(exit_code, int)):
        raise RowError("exit_code is not an integer")
    return StoredDeployment(
        id=_text(row, "id") or "", name=_text(row, "name") or "", kind=_text(row, "kind") or "",
        config=_json(row, "config", dict), route=_text(row, "route") or "", status=status,
        status_reason=_text(row, "status_reason", optional=True), history=_json(row, "history", list),
        created_at=_number(row, "created_at") or 0.0, started_at=_number(row, "started_at", optional=True),
        stopped_at=_number(row, "stopped_at", optional=True), exit_code=exit_code,
        last_activity_at=_number(row, "last_activity_at", optional=True),
        api_key_hash=_text(row, "api_key_hash", optional=True),
    )


def decode_token(row: sqlite3.Row) -> dict[str, Any]:
    """A tokens row as a dict of its columns; RowError names the first bad column."""
    for name in ("id", "hash", "prefix"):
        _text(row, name)
    for name in ("name", "deployment_id", "project", "hub_user"):
        _text(row, name, optional=True)
    _number(row, "created_at")
    _number(row, "revoked_at", optional=True)
    _number(row, "last_used_at", optional=True)
    decoded = {name: _column(row, name) for name in TOKEN_COLUMNS}
    if decoded["role"] not in TOKEN_ROLES:
        raise RowError(f"role {decoded['role']!r} is not one of {', '.join(TOKEN_ROLES)}")
    if decoded["priority"] not in TOKEN_PRIORITIES:
        raise RowError(f"priority {decoded['priority']!r} is not one of {', '.join(TOKEN_PRIORITIES)}")
    models = _json(row, "models", list) if decoded["models"] is not None else None
    if models is not None and not all(isinstance(m, str) for m in models):
        raise RowError("models is not a list of names")
    decoded["models"] = models
    groups = _json(row, "hub_groups", list) if decoded["hub_groups"] is not None else None
    if groups is not None and not all(isinstance(g, str) for g in groups):
        raise RowError("hub_groups is not a list of names")
    decoded["hub_groups"] = groups
    decoded["quotas"] = _json(row, "quotas", dict) if decoded["quotas"] is not None else None
    expires = _number(row, "expires_at", optional=True)
    # Earlier versions accepted an infinite lifetime: that is a token that never expires.
    decoded["expires_at"] = None if expires is not None and math.isinf(expires) else expires
    return decoded


class Store:
    """Thread-safe access to the SQLite file."""

    def __init__(self, path: Path, *, migrations: Sequence[str] = MIGRATIONS):
        self.path = path
        self.migrations = tuple(migrations)
        self.skipped: list[SkippedRow] = []
        self.recovered: dict[str, Any] | None = None  # set when an unreadable file was moved aside
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except (sqlite3.DatabaseError, UnreadableStore) as exc:
            self._move_aside(exc)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = connect_private(self.path)
        try:
            db.row_factory = sqlite3.Row
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise UnreadableStore(f"SQLite integrity check failed: {check}")
            self._migrate(db)
            for table in ("deployments", "tokens"):
                db.execute(f"SELECT * FROM {table}").fetchall()  # a damaged page shows here
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > len(self.migrations):
            raise UnreadableStore(
                f"written by a newer version (schema {version}; this version knows up to {len(self.migrations)})"
            )
        for number, sql in enumerate(self.migrations[version:], start=version + 1):
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(sql):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            log.info("deployment store %s migrated to schema %d", self.path.name, number)

    def _move_aside(self, exc: Exception) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.unreadable-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.unreadable-{stamp}-{n}")
        self.path.rename(target)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                side.rename(target.with_name(target.name + suffix))
        reason = f"the deployment store could not be read ({exc}); moved aside to {target.name}, starting empty"
        log.error("%s", reason)
        self.recovered = {"moved_to": target.name, "reason": reason, "at": time.time()}

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def report(self) -> dict[str, Any]:
        """What the store could not read: rows skipped and a file moved aside (for /status)."""
        return {"recovered": self.recovered, "skipped": [s.to_json() for s in self.skipped]}

    def skip(self, table: str, row_id: Any, reason: str) -> None:
        """Record (once) and log a stored row that is left out."""
        entry = SkippedRow(table, row_id if isinstance(row_id, str) or row_id is None else repr(row_id), reason)
        if entry not in self.skipped:
            self.skipped.append(entry)
            log.warning("skipping stored %s row %s: %s", table, entry.id, reason)

    def save(self, row: StoredDeployment) -> None:
        """Insert or replace a deployment."""
        data = asdict(row)
        data["config"] = json.dumps(row.config)
        data["history"] = json.dumps(row.history)
        columns = ", ".join(data)
        values = ", ".join(f":{name}" for name in data)
        with self._lock:
            self._db.execute(f"INSERT OR REPLACE INTO deployments ({columns}) VALUES ({values})", data)

    def delete(self, deployment_id: str) -> None:
        """Forget a deployment (and its deployment-scoped tokens)."""
        with self._lock:
            self._db.execute("DELETE FROM deployments WHERE id = ?", (deployment_id,))
            self._db.execute("DELETE FROM tokens WHERE deployment_id = ?", (deployment_id,))

    def load_all(self) -> list[StoredDeployment]:
        """Every readable stored deployment, oldest first; the others are skipped and reported."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM deployments ORDER BY rowid").fetchall()
        loaded = []
        for row in rows:
            try:
                loaded.append(decode_deployment(row))
            except RowError as exc:
                self.skip("deployments", _row_id(row), str(exc))
        return sorted(loaded, key=lambda d: d.created_at)

    # Tokens -----------------------------------------------------------------------------

    def add_token(self, row: dict[str, Any]) -> None:
        """Store a token's hash and scope (`models` a list or None, `quotas` a dict or None)."""
        columns = ", ".join(TOKEN_COLUMNS)
        values = ", ".join(f":{name}" for name in TOKEN_COLUMNS)
        with self._lock:
            self._db.execute(f"INSERT INTO tokens ({columns}) VALUES ({values})", _token_params(row))

    def update_token(self, row: dict[str, Any]) -> None:
        """Write a token's changeable columns (label, expiry, quotas, priority, role, models, its holder's Hub
        groups) again."""
        params = _token_params(row)
        with self._lock:
            self._db.execute("UPDATE tokens SET name = :name, expires_at = :expires_at, quotas = :quotas, "
                             "priority = :priority, role = :role, models = :models, hub_groups = :hub_groups "
                             "WHERE id = :id", params)

    def touch_tokens(self, last_used: dict[str, float]) -> None:
        """Record when keys were last used (written in batches, not per request)."""
        with self._lock:
            self._db.executemany("UPDATE tokens SET last_used_at = ? WHERE id = ?",
                                 [(at, token_id) for token_id, at in last_used.items()])

    def tokens(self) -> list[dict[str, Any]]:
        """Every readable token row, oldest first; the others are skipped and reported."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM tokens ORDER BY rowid").fetchall()
        decoded = []
        for row in rows:
            try:
                decoded.append(decode_token(row))
            except RowError as exc:
                self.skip("tokens", _row_id(row), str(exc))
        return sorted(decoded, key=lambda t: t["created_at"])

    def revoke_token(self, token_id: str, at: float) -> bool:
        """Mark a token revoked; False when there is no such live token."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (at, token_id)
            )
            return cur.rowcount > 0


def _token_params(row: dict[str, Any]) -> dict[str, Any]:
    params = {k: row.get(k) for k in TOKEN_COLUMNS}
    params["role"] = params["role"] or "inference"
    params["priority"] = params["priority"] or "interactive"
    for name in ("models", "quotas", "hub_groups"):
        if params[name] is not None:
            params[name] = json.dumps(params[name])
    return params


def connect_private(path: Path) -> sqlite3.Connection:
    """A connection to an SQLite file only its owner may read (created 0600), in WAL mode, autocommit,
    usable from any thread (callers hold their own lock)."""
    new = not path.exists()
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        if new:
            os.chmod(path, 0o600)
        db.execute("PRAGMA journal_mode=WAL")
    except BaseException:
        db.close()
        raise
    return db


class UnreadableStore(Exception):
    """The file opens, but is not a store this version can use."""


def _statements(sql: str) -> list[str]:
    """The statements of a migration script (none of ours holds a ';' inside a literal)."""
    return [s.strip() for s in sql.split(";") if s.strip()]
