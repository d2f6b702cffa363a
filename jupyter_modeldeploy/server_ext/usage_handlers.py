"""`GET /api/modeldeploy/usage`: exact per-key usage per minute, from the activity file (Jupyter auth)."""

from __future__ import annotations

import asyncio
import math

from tornado import web

from ..metrics.keyusage import KeyUsage
from .handlers import BaseHandler
from .schemas import KeyUsageResponse
from .writer import BatchWriter

MAX_ROWS = 100_000


class UsageHandler(BaseHandler):
    """GET per-key usage rows; filters: key, deployment (id or name), model, since, until (Unix seconds)."""

    def _time(self, name: str) -> int | None:
        raw = self.get_query_argument(name, None)
        if raw in (None, ""):
            return None
        try:
            value = float(raw)
        except ValueError:
            raise web.HTTPError(400, f"{name} must be a Unix timestamp in seconds") from None
        if not math.isfinite(value) or abs(value) > 1e11:
            raise web.HTTPError(400, f"{name} must be a Unix timestamp in seconds")
        return int(value // 60) * 60

    @web.authenticated
    async def get(self) -> None:
        usage: KeyUsage = self.settings["modeldeploy_key_usage"]
        writer: BatchWriter = self.settings["modeldeploy_writer"]
        since, until = self._time("since"), self._time("until")
        ref = self.get_query_argument("deployment", None)
        deployment_id = None
        if ref:
            deployment_id = next((d.id for d in self.supervisor.list() if ref in (d.id, d.name)), ref)  # deleted: by id
        filters = {"key_id": self.get_query_argument("key", None) or None, "deployment_id": deployment_id,
                   "model": self.get_query_argument("model", None) or None, "since_minute": since, "until_minute": until}
        await writer.flush()  # what the gateway counted up to now is in the file
        rows = await asyncio.get_running_loop().run_in_executor(None, lambda: usage.store.usage(**filters, limit=MAX_ROWS))
        names = {t.id: t.name for t in self.tokens.list()}
        deployments = {d.id: d.name for d in self.supervisor.list()}
        for row in rows:
            row["key_name"] = names.get(row["key_id"])
            row["deployment"] = deployments.get(row["deployment_id"])
        self.write_model(KeyUsageResponse.model_validate({"rows": rows}))


def usage_handlers(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    return [(rf"{prefix}/usage", UsageHandler)]
