"""The line a deployment's requests wait in once it has `max_concurrent_requests` in flight.

A request that finds every slot taken gets a `Turn` in its deployment's `WaitingLine` instead of an
instant 429, when the line has room (`queue_size`); it is refused with `Retry-After` when the line
is full, or when its wait passes `queue_timeout_s`. A slot given back goes straight to the next turn
(the count never dips below the limit for a newcomer to take it first): by priority class (a key's
`priority`, `interactive` before `batch`), and within a class to the key served longest ago (a key
that just joined counts as never served), so one key sending a flood waits behind itself and
another key's request is next, and several busy keys take turns. Within one key, first come, first
served. Everything here runs in the one process that admits, with no await between a check
and its effect, so the line is exact like the count it guards.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

#: A key's priority class, served in this order (lower first).
PRIORITY_CLASSES = {"interactive": 0, "batch": 1}


@dataclass(frozen=True)
class LineStats:
    """A line's depth now, and its counts since the gateway process started."""

    depth: int = 0
    served: int = 0  # turns that got their slot
    rejected: int = 0  # refused because the line was full or the wait ran out
    wait_s_total: float = 0.0  # the served turns' waits, summed

    def __add__(self, other: LineStats) -> LineStats:
        return LineStats(self.depth + other.depth, self.served + other.served, self.rejected + other.rejected,
                         self.wait_s_total + other.wait_s_total)

    def to_json(self) -> dict[str, float]:
        """For the deployment's record: the depth, the counts and the mean wait of the served turns."""
        mean = self.wait_s_total / self.served if self.served else 0.0
        return {"depth": self.depth, "served": self.served, "rejected": self.rejected,
                "wait_s_total": round(self.wait_s_total, 4), "mean_wait_s": round(mean, 4)}


@dataclass(eq=False)
class Turn:
    """One request's place in a line: `granted` resolves once its slot is taken for it."""

    key_id: str
    priority: int
    start: Callable[[], None]  # takes the slot (the deployment's count, its report) when the turn comes
    enqueued_at: float = field(default_factory=time.monotonic)
    granted: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def waited_s(self) -> float:
        """Seconds since it joined the line."""
        return time.monotonic() - self.enqueued_at


class WaitingLine:
    """One deployment's waiting requests: priority classes, in each a round-robin over keys, FIFO within a key."""

    def __init__(self, changed: Callable[[WaitingLine], None] | None = None) -> None:
        self._changed = changed  # told after every change (the worker reports the line to the server)
        self._classes: dict[int, dict[str, deque[Turn]]] = {}
        self._last_served: dict[str, int] = {}  # keys with turns waiting: when each was last served (a count)
        self._serves = 0
        self.depth = 0
        self.rejected = 0  # refused because the line was full or the wait ran out
        self.served = 0  # turns that got their slot
        self.wait_s_total = 0.0  # their waits, summed

    def stats(self) -> LineStats:
        """The line now."""
        return LineStats(self.depth, self.served, self.rejected, self.wait_s_total)

    def reject(self) -> None:
        """A request refused for the line: it was full, or the request's wait ran out."""
        self.rejected += 1
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed(self)

    def join(self, key_id: str, priority: int, start: Callable[[], None]) -> Turn:
        """A new turn at the back of its key's own line."""
        turn = Turn(key_id, priority, start)
        self._classes.setdefault(priority, {}).setdefault(key_id, deque()).append(turn)
        self.depth += 1
        self._notify()
        return turn

    def leave(self, turn: Turn) -> bool:
        """Take a turn out before it came (its client left, its wait ran out); False when it was not waiting."""
        keys = self._classes.get(turn.priority)
        turns = keys.get(turn.key_id) if keys is not None else None
        if turns is None or turn not in turns:
            return False
        turns.remove(turn)
        self.depth -= 1
        if not turns:
            self._drop_key(turn.priority, turn.key_id)
        self._notify()
        return True

    def _drop_key(self, priority: int, key_id: str) -> None:
        del self._classes[priority][key_id]
        if not any(key_id in keys for keys in self._classes.values()):
            self._last_served.pop(key_id, None)

    def next_turn(self) -> Turn | None:
        """The turn to serve next, out of the line: of the best class, the key served longest ago."""
        for priority in sorted(self._classes):
            keys = self._classes[priority]
            if not keys:
                continue
            key_id = min(keys, key=lambda k: self._last_served.get(k, -1))
            self._serves += 1
            self._last_served[key_id] = self._serves
            turn = keys[key_id].popleft()
            if not keys[key_id]:
                self._drop_key(priority, key_id)
            self.depth -= 1
            return turn
        return None

    def grant(self, free: Callable[[], bool]) -> None:
        """Give slots to the next turns while `free()` says one is free."""
        granted = False
        while self.depth and free():
            turn = self.next_turn()
            if turn is None:
                break
            turn.start()
            granted = True
            self.served += 1
            self.wait_s_total += turn.waited_s()
            if not turn.granted.done():
                turn.granted.set_result(None)
        if granted:
            self._notify()
