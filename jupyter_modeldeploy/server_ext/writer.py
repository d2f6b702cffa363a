"""The batch writer: what the gateway notes per request in memory reaches SQLite once a second.

Each source hands over its pending write on the event loop (`pending_write() -> callable | None`,
taking what it gathered since the last call); the write itself runs in a worker thread, so no
request ever waits for SQLite.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class PendingWrites(Protocol):
    """Anything that gathers writes in memory and hands them over in a batch."""

    def pending_write(self) -> Callable[[], None] | None: ...


class BatchWriter:
    """Runs every source's pending write every `interval_s` seconds, and once more when stopped."""

    def __init__(self, sources: list[PendingWrites], *, interval_s: float = 1.0):
        self.sources = sources
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # a reader's flush waits for a batch already on its way

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def flush(self) -> None:
        """Write what every source gathered so far."""
        async with self._lock:
            await self._flush()

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        for source in self.sources:
            write = source.pending_write()
            if write is None:
                continue
            try:
                await loop.run_in_executor(None, write)
            except Exception:  # a failed batch must not stop the next ones
                log.exception("modeldeploy: a batched write failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()
