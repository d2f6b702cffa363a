"""Per-key quotas: requests per minute, tokens per minute, requests in flight, tokens per day.

`QuotaBook` keeps, per key id, the times of its requests and tokens of the last minute (sliding
windows), its requests in flight and its tokens of the current UTC day, all in memory: a check is
a few deque operations. A request past a quota is refused before its body is read, with the seconds
after which it would pass (`Retry-After`); other keys have books of their own and are unaffected.
Tokens count when a request ends (its usage is known then), so a request admitted under the token
quotas may take them past it: the next one waits.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from .tokens import Quotas

WINDOW_S = 60.0
DAY_S = 86400.0


@dataclass(frozen=True)
class QuotaExceeded:
    """Why a request is refused, and when to try again."""

    quota: str  # the Quotas field that refused it
    limit: int
    retry_after_s: int

    def message(self) -> str:
        what = {
            "requests_per_minute": "requests per minute", "tokens_per_minute": "tokens per minute",
            "max_in_flight": "requests in flight", "daily_tokens": "tokens per day",
        }[self.quota]
        return f"rate limit reached for this key: {self.limit} {what} ({self.quota}); try again in {self.retry_after_s} s"


@dataclass
class KeyBook:
    """One key's counts."""

    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    tokens_in_window: int = 0
    in_flight: int = 0
    day: int = -1
    day_tokens: int = 0

    def expire(self, now: float) -> None:
        cutoff = now - WINDOW_S
        while self.requests and self.requests[0] <= cutoff:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= cutoff:
            self.tokens_in_window -= self.tokens.popleft()[1]
        day = int(now // DAY_S)
        if day != self.day:
            self.day, self.day_tokens = day, 0

    def token_wait(self, now: float, limit: int) -> float:
        """Seconds until the tokens of the last minute fall under `limit`."""
        total = self.tokens_in_window
        for at, count in self.tokens:
            total -= count
            if total < limit:
                return at + WINDOW_S - now
        return WINDOW_S


def _seconds(value: float) -> int:
    return max(1, math.ceil(value))


class QuotaBook:
    """Admits or refuses each key's requests against its quotas."""

    def __init__(self) -> None:
        self._books: dict[str, KeyBook] = {}

    def book(self, key_id: str) -> KeyBook:
        found = self._books.get(key_id)
        if found is None:
            found = self._books[key_id] = KeyBook()
        return found

    def seed_day(self, key_id: str, tokens: int, now: float) -> None:
        """Tokens a key already used today (read back from the usage store after a restart)."""
        book = self.book(key_id)
        book.expire(now)
        book.day_tokens += tokens

    def admit(self, key_id: str, quotas: Quotas, now: float) -> QuotaExceeded | None:
        """Count a request in (None), or say which quota refuses it; an admitted request must be `release`d."""
        book = self.book(key_id)
        book.expire(now)
        if quotas.max_in_flight is not None and book.in_flight >= quotas.max_in_flight:
            return QuotaExceeded("max_in_flight", quotas.max_in_flight, 1)
        rpm = quotas.requests_per_minute
        if rpm is not None and len(book.requests) >= rpm:
            return QuotaExceeded("requests_per_minute", rpm, _seconds(book.requests[-rpm] + WINDOW_S - now))
        tpm = quotas.tokens_per_minute
        if tpm is not None and book.tokens_in_window >= tpm:
            return QuotaExceeded("tokens_per_minute", tpm, _seconds(book.token_wait(now, tpm)))
        daily = quotas.daily_tokens
        if daily is not None and book.day_tokens >= daily:
            return QuotaExceeded("daily_tokens", daily, _seconds((book.day + 1) * DAY_S - now))
        book.requests.append(now)
        book.in_flight += 1
        return None

    def mirror(self, key_id: str, now: float) -> None:
        """Count a request another process admitted (the gateway worker's, reported to the server)."""
        book = self.book(key_id)
        book.expire(now)
        book.requests.append(now)
        book.in_flight += 1

    def release(self, key_id: str, tokens: int, now: float) -> None:
        """An admitted request ended, having used `tokens`."""
        book = self.book(key_id)
        book.in_flight = max(0, book.in_flight - 1)
        if tokens > 0:
            book.expire(now)
            book.tokens.append((now, tokens))
            book.tokens_in_window += tokens
            book.day_tokens += tokens
