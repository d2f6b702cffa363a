"""The activity REST routes (Jupyter auth): exact per-key usage per minute, and the request log.

Both read the activity file in a worker thread, after the batch writer has written what the
gateway counted up to now.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from tornado import web

from ..metrics.keyusage import KeyUsage
from ..metrics.requestlog import RequestLog
from .handlers import BaseHandler
from .schemas import KeyUsageResponse, RequestLogEntry, RequestLogResponse
from .writer import BatchWriter

MAX_ROWS = 100_000
MAX_LOG_ROWS = 10_000


class ActivityHandler(BaseHandler):
    """Shared: query arguments checked (400 naming the argument), reads after a flush."""

    def number(self, name: str, *, low: float = -1e11, high: float = 1e11) -> float | None:
        raw = self.get_query_argument(name, None)
        if raw in (None, ""):
            return None
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not low <= value <= high:
            raise web.HTTPError(400, f"{name} must be a number from {low:g} to {high:g}")
        return value

    def deployment_id(self) -> str | None:
        """The `deployment` argument (an id or a name) as an id; a deleted deployment's id stands as it is."""
        ref = self.get_query_argument("deployment", None)
        if not ref:
            return None
        return next((d.id for d in self.supervisor.list() if ref in (d.id, d.name)), ref)

    async def read(self, query: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        writer: BatchWriter = self.settings["modeldeploy_writer"]
        await writer.flush()  # what the gateway counted up to now is in the file
        return await asyncio.get_running_loop().run_in_executor(None, query)

    def names(self, rows: list[dict[str, Any]]) -> None:
        """Add each row's key label, the Hub user who holds the key (a shared key's) and the deployment's name."""
        keys = {t.id: t for t in self.tokens.list()}
        deployments = {d.id: d.name for d in self.supervisor.list()}
        for row in rows:
            key = keys.get(row["key_id"])
            row["key_name"] = key.name if key is not None else None
            row["hub_user"] = key.hub_user if key is not None else None
            row["deployment"] = deployments.get(row["deployment_id"])


class UsageHandler(ActivityHandler):
    """GET per-key usage rows; filters: key, deployment (id or name), model, since, until (Unix seconds)."""

    @web.authenticated
    async def get(self) -> None:
        usage: KeyUsage = self.settings["modeldeploy_key_usage"]
        since, until = self.number("since"), self.number("until")
        filters = {"key_id": self.get_query_argument("key", None) or None, "deployment_id": self.deployment_id(),
                   "model": self.get_query_argument("model", None) or None,
                   "since_minute": int(since // 60) * 60 if since is not None else None,
                   "until_minute": int(until // 60) * 60 if until is not None else None}
        rows = await self.read(lambda: usage.store.usage(**filters, limit=MAX_ROWS))
        self.names(rows)
        self.write_model(KeyUsageResponse.model_validate({"rows": rows}))


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    row["streamed"] = bool(row["streamed"])
    row["has_bodies"] = bool(row["has_bodies"])
    for name in ("request_body", "response_body"):
        if isinstance(row.get(name), bytes):
            row[name] = row[name].decode("utf-8", "replace")
    return row


LOG_OFF = "this server keeps no request log (ModelDeployApp.keep_request_log is off)"


class RequestLogHandler(ActivityHandler):
    """GET the request log, newest first; filters: deployment, key, since; `limit`; `bodies=1` adds captures."""

    @web.authenticated
    async def get(self) -> None:
        log: RequestLog | None = self.settings["modeldeploy_request_log"]
        if log is None:
            self.fail(404, LOG_OFF)
            return
        limit = int(self.number("limit", low=1, high=MAX_LOG_ROWS) or 1000)
        filters = {"deployment_id": self.deployment_id(), "key_id": self.get_query_argument("key", None) or None,
                   "since": self.number("since"), "limit": limit,
                   "bodies": self.get_query_argument("bodies", "0") in ("1", "true")}
        rows = [_entry(r) for r in await self.read(lambda: log.store.requests(**filters))]
        self.names(rows)
        self.write_model(RequestLogResponse.model_validate({"requests": rows}))


class RequestEntryHandler(ActivityHandler):
    """GET one logged request with its captured bodies (null where the deployment did not capture them)."""

    @web.authenticated
    async def get(self, entry_id: str) -> None:
        log: RequestLog | None = self.settings["modeldeploy_request_log"]
        if log is None:
            self.fail(404, LOG_OFF)
            return
        if not entry_id.isdigit() or len(entry_id) > 18:
            self.fail(404, f"no logged request {entry_id[:40]!r}")
            return
        rows = await self.read(lambda: log.store.requests(entry_id=int(entry_id), limit=1, bodies=True))
        if not rows:
            self.fail(404, f"no logged request {entry_id}")
            return
        row = _entry(rows[0])
        self.names([row])
        self.write_model(RequestLogEntry.model_validate(row))


def activity_handlers(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    return [
        (rf"{prefix}/usage", UsageHandler),
        (rf"{prefix}/requests", RequestLogHandler),
        (rf"{prefix}/requests/(?P<entry_id>[^/]+)", RequestEntryHandler),
    ]
