"""A concurrency sweep's pure parts: which steps to run within the deployment's limits, and each step's figures."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


def steps(max_concurrency: int, limit: int | None = None) -> list[int]:
    """1, 2, 4, … up to `max_concurrency` (which is included), never past the deployment's `limit`."""
    top = max(1, min(max_concurrency, limit) if limit else max_concurrency)
    found, c = [], 1
    while c < top:
        found.append(c)
        c *= 2
    return [*found, top]


def concurrency_limit(config: dict[str, Any]) -> int | None:
    """The most requests the gateway lets in at once for this configuration (429 past it)."""
    value = config.get("max_concurrent_requests")
    return int(value) if isinstance(value, int) and value > 0 else None


@dataclass(frozen=True)
class Sample:
    """One request of a step: when it started and ended, when each token arrived, and whether it succeeded."""

    started: float
    ended: float
    token_times: list[float] = field(default_factory=list)
    completion_tokens: int = 0  # from usage when the engine sent it, else the chunks counted
    error: str | None = None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass(frozen=True)
class StepResult:
    """The figures of one concurrency step (latencies in milliseconds)."""

    concurrency: int
    requests: int
    errors: int
    ttft_ms_p50: float | None
    ttft_ms_p95: float | None
    itl_ms_p50: float | None
    itl_ms_p95: float | None
    tokens_per_s: float
    requests_per_s: float
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize(concurrency: int, samples: list[Sample]) -> StepResult:
    """A step's figures from its samples: time to first token, inter-token latency, throughput."""
    ok = [s for s in samples if s.error is None]
    ttft = [(s.token_times[0] - s.started) * 1000 for s in ok if s.token_times]
    gaps = [(b - a) * 1000 for s in ok for a, b in zip(s.token_times, s.token_times[1:])]
    duration = (max(s.ended for s in samples) - min(s.started for s in samples)) if samples else 0.0
    tokens = sum(s.completion_tokens for s in ok)

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return StepResult(
        concurrency=concurrency, requests=len(samples), errors=len(samples) - len(ok),
        ttft_ms_p50=rounded(statistics.median(ttft) if ttft else None), ttft_ms_p95=rounded(_percentile(ttft, 0.95)),
        itl_ms_p50=rounded(statistics.median(gaps) if gaps else None), itl_ms_p95=rounded(_percentile(gaps, 0.95)),
        tokens_per_s=round(tokens / duration, 3) if duration > 0 else 0.0,
        requests_per_s=round(len(ok) / duration, 3) if duration > 0 else 0.0, duration_s=round(duration, 3),
    )
