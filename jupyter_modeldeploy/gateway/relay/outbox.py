"""The worker's reports to the server, sent in batches.

Each report (`Started`, `Finished`, ...) used to be sent before the answer it counts could end: a
frame every loop turn, written ahead of the answers' last bytes, each send waking the server. Now
reports gather and go out together every REPORT_EVERY_S (or once REPORT_BATCH wait), and answers
end as soon as they are counted here. A reader of counts on the server asks first (`Sync`): the
worker sends what gathered, then `Synced`, so a REST reader or Prometheus still finds every
request whose client had its answer before the read began — one round trip a read, none a
request. What the server acts on at once (a wake, a replica unreachable or its load) goes now
(`put(..., now=True)`), after everything before it; what moves a key's quota book goes at the end
of the loop's turn (`soon`), so a worker that dies loses no quota count the server would need to
go on from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .protocol import Message

REPORT_EVERY_S = 0.05  # the server's own views (the dashboard, idle clocks) lag the worker by at most this
REPORT_BATCH = 256  # or this many reports, whichever comes first


class Outbox:
    """Reports waiting to be sent, in the order they were made."""

    def __init__(self, send: Callable[[list[Message]], None], every_s: float = REPORT_EVERY_S,
                 batch: int = REPORT_BATCH):
        self._send = send
        self._every_s = every_s
        self._batch = batch
        self._messages: list[Message] = []
        self._timer: asyncio.TimerHandle | None = None
        self._soon = False

    def put(self, message: Message, *, now: bool = False, soon: bool = False) -> None:
        """A report, sent with the others within REPORT_EVERY_S (`soon`: when the loop's turn ends; `now`: at once,
        after the others)."""
        self._messages.append(message)
        if now or len(self._messages) >= self._batch:
            self.flush()
        elif soon:
            if not self._soon:
                self._soon = True
                asyncio.get_running_loop().call_soon(self.flush)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._every_s, self.flush)

    def flush(self) -> None:
        """Send what gathered (one frame)."""
        self._soon = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        messages, self._messages = self._messages, []
        if messages:
            self._send(messages)
