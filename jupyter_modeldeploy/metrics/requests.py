"""Per-deployment request statistics fed by the gateway: exact totals and per-interval rates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


@dataclass
class Totals:
    """Counters since the server started."""

    requests: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "by_status": dict(self.by_status),
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
        }


@dataclass
class RequestStats:
    """What the gateway saw for one deployment: totals, per-model totals, the current interval."""

    totals: Totals = field(default_factory=Totals)
    per_model: dict[str, Totals] = field(default_factory=dict)
    _latencies_ms: list[float] = field(default_factory=list)
    _first_chunk_ms: list[float] = field(default_factory=list)
    _requests: int = 0
    _completion_tokens: int = 0
    _prompt_tokens: int = 0

    def record(self, model: str | None, status: int, latency_s: float, first_chunk_s: float | None,
               prompt_tokens: int, completion_tokens: int) -> None:
        """Count one finished request."""
        for totals in (self.totals, self.per_model.setdefault(model or "-", Totals())):
            totals.requests += 1
            totals.by_status[str(status)] = totals.by_status.get(str(status), 0) + 1
            totals.prompt_tokens += prompt_tokens
            totals.completion_tokens += completion_tokens
        self._requests += 1
        self._latencies_ms.append(latency_s * 1000)
        if first_chunk_s is not None:
            self._first_chunk_ms.append(first_chunk_s * 1000)
        self._prompt_tokens += prompt_tokens
        self._completion_tokens += completion_tokens

    def take_interval(self, seconds: float) -> dict[str, float | None]:
        """Rates and percentiles over the interval just ended; resets the interval."""
        seconds = max(seconds, 1e-6)
        row = {
            "requests_per_s": self._requests / seconds,
            "latency_p50_ms": percentile(self._latencies_ms, 50),
            "latency_p99_ms": percentile(self._latencies_ms, 99),
            "first_token_p50_ms": percentile(self._first_chunk_ms, 50),
            "tokens_per_s": self._completion_tokens / seconds,
            "prompt_tokens_per_s": self._prompt_tokens / seconds,
        }
        self._latencies_ms, self._first_chunk_ms = [], []
        self._requests = self._completion_tokens = self._prompt_tokens = 0
        return row
