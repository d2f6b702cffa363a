"""The batching queue: one queue and one consumer per model, fed one entry per input text.

`pack_batch` is the packing rule (pure); `BatchQueue` holds the pending entries on the
event loop and hands the consumer the next batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any


def padded_tokens(lengths: Sequence[int]) -> int:
    """Tokens a padded batch of these lengths costs: rows times the longest row."""
    return len(lengths) * max(lengths) if lengths else 0


def pack_batch(lengths: Sequence[int], max_batch_tokens: int, max_batch_requests: int) -> int:
    """How many entries from the front of the queue go into the next batch.

    A batch holds at most `max_batch_requests` entries and, padded to its longest entry,
    at most `max_batch_tokens` tokens. The first entry always goes, even when it alone is
    over the token limit, so the queue never stalls. Order is kept (first come, first served).
    """
    if not lengths:
        return 0
    count = 0
    longest = 0
    for length in lengths[:max_batch_requests]:
        longest_if_added = max(longest, length)
        if count and (count + 1) * longest_if_added > max_batch_tokens:
            break
        count += 1
        longest = longest_if_added
    return count


@dataclass
class Entry:
    """One input text waiting for inference."""

    features: Any  # the tokenizer's output for this text (input ids and friends)
    tokens: int
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.perf_counter)


class BatchQueue:
    """Pending entries of one model; a single consumer takes them out in batches."""

    def __init__(self, max_batch_tokens: int, max_batch_requests: int) -> None:
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_requests = max_batch_requests
        self._pending: deque[Entry] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, entry: Entry) -> None:
        """Queue one entry."""
        self._pending.append(entry)
        self._ready.set()

    async def next_batch(self) -> list[Entry]:
        """Wait for at least one entry, then take as many as fit in one batch."""
        while True:
            # Requests whose client went away are dropped here, before they cost inference.
            while self._pending and self._pending[0].future.done():
                self._pending.popleft()
            if self._pending:
                break
            self._ready.clear()
            await self._ready.wait()
        lengths = [e.tokens for e in islice(self._pending, self.max_batch_requests)]
        count = pack_batch(lengths, self.max_batch_tokens, self.max_batch_requests)
        return [self._pending.popleft() for _ in range(count)]
