"""The request log: every request's time, key id, model, route, status, latency, time to first token
and tokens, and (where the deployment captures them) its bodies, secrets redacted.

Rows are gathered per request in memory (a tuple appended; at most `max_pending` wait, the
oldest dropped past that) and written to the activity file once a second by the batch writer,
which also keeps the table bounded (`max_rows`). Redaction runs in that writer's thread too.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..gateway.records import RequestRecord
from .activity_store import ActivityStore
from .redact import redact


class RequestLog:
    """Observer of the gateway that fills the request log."""

    def __init__(self, store: ActivityStore, *, max_rows: int = 100_000, max_pending: int = 50_000):
        self.store = store
        self.max_rows = max_rows
        self._pending: deque[tuple[tuple[Any, ...], Any]] = deque(maxlen=max_pending)

    def observe(self, record: RequestRecord) -> None:
        """Note one finished request (called by the gateway)."""
        usage = record.usage
        row = (
            time.time(), record.key_id, record.deployment_id, record.model, record.method, record.path, record.status,
            record.latency_s * 1000, record.first_chunk_s * 1000 if record.streamed and record.first_chunk_s else None,
            usage.prompt_tokens if usage else None, usage.completion_tokens if usage else None, int(record.streamed),
            record.door, record.replica,
        )
        self._pending.append((row, record.capture))

    def pending_write(self) -> Callable[[], None] | None:
        """The rows since the last call, as a write for a worker thread (None: nothing to write)."""
        if not self._pending:
            return None
        pending, self._pending = list(self._pending), deque(maxlen=self._pending.maxlen)
        return functools.partial(self._write, pending)

    def _write(self, pending: list[tuple[tuple[Any, ...], Any]]) -> None:
        rows = []
        for row, capture in pending:
            if capture is None:
                rows.append((*row, None, None))
            else:
                request = redact(capture.request, capture.secrets)[:capture.limit]
                rows.append((*row, request, redact(bytes(capture.response), capture.secrets)[:capture.limit]))
        self.store.add_requests(rows, keep=self.max_rows)
