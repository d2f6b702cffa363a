"""The worker's reports to the server, sent once a loop turn in one frame.

Each report (`Started`, `Finished`, `Wake`, `Unreachable`) used to be a frame of its own, sent at
once: two sends a request, each a system call that wakes the server. Now they gather while the
loop runs the turn's callbacks and go out together when it ends (`flush`, scheduled with the
first). What must not be seen before its report is sent waits for the frame (`then`): the bytes
by which a client can tell its answer ended, so a REST reader or a next request under a quota
still finds the request counted the moment the client has its answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .protocol import Message


class Outbox:
    """Reports waiting for the end of the loop's turn, and what waits for them."""

    def __init__(self, send: Callable[[list[Message]], None]):
        self._send = send
        self._messages: list[Message] = []
        self._after: list[Callable[[], None]] = []
        self._scheduled = False

    def put(self, message: Message) -> None:
        """A report, sent with the others when the turn ends."""
        self._messages.append(message)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def then(self, action: Callable[[], None]) -> None:
        """Run `action` once the reports put so far are in the server's queue (now, when there are none)."""
        if self._messages:
            self._after.append(action)
        else:
            action()

    def flush(self) -> None:
        """Send what gathered (one frame), then run what waited for it."""
        self._scheduled = False
        messages, self._messages = self._messages, []
        after, self._after = self._after, []
        if messages:
            self._send(messages)
        for action in after:
            action()
