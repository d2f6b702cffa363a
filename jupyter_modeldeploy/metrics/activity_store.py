"""The activity file: per-key usage per minute (and the request log), in SQLite beside the deployment store.

A file of its own (`activity.sqlite`), so batched writes of activity never wait behind the
deployment store. Written only from worker threads by the batch writer, read by the REST API in
worker threads; one connection behind a lock. Numbered migrations as in the deployment store;
a file this version cannot read is renamed aside and an empty one takes its place.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..supervisor.store import connect_private

log = logging.getLogger(__name__)

MIGRATIONS: tuple[str, ...] = (
    # 1: usage per key, deployment and model, per minute.
    """
    CREATE TABLE usage (
        minute INTEGER NOT NULL,
        key_id TEXT NOT NULL,
        deployment_id TEXT NOT NULL,
        model TEXT NOT NULL,
        requests INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        PRIMARY KEY (minute, key_id, deployment_id, model)
    );
    """,
    # 2: the request log (bounded: the oldest rows are dropped past a row limit).
    """
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        key_id TEXT NOT NULL,
        deployment_id TEXT NOT NULL,
        model TEXT,
        method TEXT NOT NULL,
        route TEXT NOT NULL,
        status INTEGER NOT NULL,
        latency_ms REAL NOT NULL,
        first_token_ms REAL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        streamed INTEGER NOT NULL,
        request_body BLOB,
        response_body BLOB
    );
    CREATE INDEX requests_by_deployment ON requests (deployment_id, id);
    """,
    # 3: how each request came (the Jupyter URL or a door of the gateway worker) and the replica it went to.
    """
    ALTER TABLE requests ADD COLUMN door TEXT NOT NULL DEFAULT 'jupyter';
    ALTER TABLE requests ADD COLUMN replica TEXT;
    """,
)

USAGE_COUNTS = ("requests", "errors", "prompt_tokens", "completion_tokens")
LOG_COLUMNS = ("at", "key_id", "deployment_id", "model", "method", "route", "status", "latency_ms", "first_token_ms",
               "prompt_tokens", "completion_tokens", "streamed", "door", "replica", "request_body", "response_body")
UsageKey = tuple[int, str, str, str]  # minute, key id, deployment id, model


class ActivityStore:
    """Thread-safe access to the activity file."""

    def __init__(self, path: Path, *, migrations: Sequence[str] = MIGRATIONS):
        self.path = path
        self.migrations = tuple(migrations)
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
            path.rename(aside)
            log.error("the activity file could not be read (%s); moved aside to %s, starting empty", exc, aside.name)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = connect_private(self.path)
        try:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > len(self.migrations):
                raise sqlite3.DatabaseError(f"written by a newer version (schema {version})")
            for number, sql in enumerate(self.migrations[version:], start=version + 1):
                db.executescript(f"BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {number}; COMMIT;")
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # Usage ------------------------------------------------------------------------------

    def add_usage(self, counts: dict[UsageKey, list[int]]) -> None:
        """Add per-minute counts (requests, errors, prompt, completion) to what is stored."""
        rows = [(*key, *values) for key, values in counts.items()]
        with self._lock:
            self._db.executemany(
                "INSERT INTO usage (minute, key_id, deployment_id, model, requests, errors, prompt_tokens, completion_tokens)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (minute, key_id, deployment_id, model) DO UPDATE SET"
                " requests = requests + excluded.requests, errors = errors + excluded.errors,"
                " prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
                " completion_tokens = completion_tokens + excluded.completion_tokens",
                rows,
            )

    def usage(self, *, key_id: str | None = None, deployment_id: str | None = None, model: str | None = None,
              since_minute: int | None = None, until_minute: int | None = None, limit: int = 100_000) -> list[dict[str, Any]]:
        """Stored per-minute rows, oldest first, filtered."""
        where, params = _where(
            (("key_id = ?", key_id), ("deployment_id = ?", deployment_id), ("model = ?", model),
             ("minute >= ?", since_minute), ("minute < ?", until_minute))
        )
        sql = (f"SELECT minute, key_id, deployment_id, model, {', '.join(USAGE_COUNTS)} FROM usage{where}"
               " ORDER BY minute, key_id, deployment_id, model LIMIT ?")
        with self._lock:
            cursor = self._db.execute(sql, (*params, limit))
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def usage_totals(self, since_minute: int | None = None) -> dict[tuple[str, str, str], list[int]]:
        """Sums per (key id, deployment id, model), since a minute (all time when None)."""
        where, params = _where((("minute >= ?", since_minute),))
        sql = (f"SELECT key_id, deployment_id, model, {', '.join(f'SUM({c})' for c in USAGE_COUNTS)} FROM usage{where}"
               " GROUP BY key_id, deployment_id, model")
        with self._lock:
            return {(k, d, m): list(values) for k, d, m, *values in self._db.execute(sql, params).fetchall()}

    def prune_usage(self, before_minute: int) -> None:
        """Forget the rows older than a minute (the retention limit)."""
        with self._lock:
            self._db.execute("DELETE FROM usage WHERE minute < ?", (before_minute,))


    # The request log -------------------------------------------------------------------

    def add_requests(self, rows: list[tuple[Any, ...]], *, keep: int) -> None:
        """Append log rows (values in LOG_COLUMNS order), then drop all but the newest `keep`."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    f"INSERT INTO requests ({', '.join(LOG_COLUMNS)}) VALUES ({', '.join('?' * len(LOG_COLUMNS))})", rows
                )
                self._db.execute("DELETE FROM requests WHERE id <= (SELECT MAX(id) FROM requests) - ?", (keep,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def requests(self, *, deployment_id: str | None = None, key_id: str | None = None, since: float | None = None,
                 entry_id: int | None = None, limit: int = 1000, bodies: bool = False) -> list[dict[str, Any]]:
        """Log rows, newest first, filtered; bodies only when asked (`has_bodies` says whether there are any)."""
        where, params = _where((("deployment_id = ?", deployment_id), ("key_id = ?", key_id), ("at >= ?", since),
                                ("id = ?", entry_id)))
        columns = ["id", *LOG_COLUMNS[:-2], "request_body IS NOT NULL AS has_bodies"]
        if bodies:
            columns += ["request_body", "response_body"]
        sql = f"SELECT {', '.join(columns)} FROM requests{where} ORDER BY id DESC LIMIT ?"
        with self._lock:
            cursor = self._db.execute(sql, (*params, limit))
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]


def _where(conditions: Iterable[tuple[str, Any]]) -> tuple[str, list[Any]]:
    parts, params = [], []
    for sql, value in conditions:
        if value is not None:
            parts.append(sql)
            params.append(value)
    return (" WHERE " + " AND ".join(parts) if parts else ""), params
