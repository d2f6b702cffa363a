"""Exact usage per key: requests, errors, prompt and completion tokens, per key per model per minute.

The gateway hands every finished request to `observe` (a few dict operations on the event
loop); the counts gathered since the last batch go to the activity file once a second through
`pending_write`, and totals since the file began are kept in memory for Prometheus
(`modeldeploy_key_*_total{deployment, deployment_id, model, key_id}`: the key's id, never the key).
Tokens are the engine's own `usage` (or llama.cpp's `timings`), as the gateway read them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from ..gateway.records import RequestRecord
from .activity_store import USAGE_COUNTS, ActivityStore, UsageKey

NO_MODEL = "-"
RETENTION_CHECK_S = 3600.0


def usage_counts(record: RequestRecord) -> list[int]:
    """(requests, errors, prompt tokens, completion tokens) of one request."""
    usage = record.usage
    return [1, 1 if record.status >= 400 else 0, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0]


class KeyUsage:
    """Per-key usage: gathered per request, written in batches, totals kept for Prometheus."""

    def __init__(self, store: ActivityStore, *, retention_days: float = 90.0):
        self.store = store
        self.retention_days = retention_days
        self._pending: dict[UsageKey, list[int]] = {}
        self.totals: dict[tuple[str, str, str], list[int]] = store.usage_totals()
        self._pruned_at = 0.0

    def observe(self, record: RequestRecord) -> None:
        """Count one finished request (called by the gateway)."""
        counts = usage_counts(record)
        model = record.model or NO_MODEL
        minute = int(time.time() // 60) * 60
        _add(self._pending, (minute, record.key_id, record.deployment_id, model), counts)
        _add(self.totals, (record.key_id, record.deployment_id, model), counts)

    def pending_write(self) -> Callable[[], None] | None:
        """The counts since the last call, as a write for a worker thread (None: nothing to write)."""
        now = time.time()
        prune = now - self._pruned_at > RETENTION_CHECK_S
        if not self._pending and not prune:
            return None
        pending, self._pending = self._pending, {}
        if prune:
            self._pruned_at = now
        return functools.partial(self._write, pending, int(now - self.retention_days * 86400) if prune else None)

    def _write(self, pending: dict[UsageKey, list[int]], prune_before: int | None) -> None:
        if pending:
            self.store.add_usage(pending)
        if prune_before is not None:
            self.store.prune_usage(prune_before)

    def tokens_today(self) -> dict[str, int]:
        """Tokens per key id stored since UTC midnight, to seed daily budgets after a restart."""
        midnight = int(time.time() // 86400) * 86400
        today: dict[str, int] = {}
        for (key_id, _dep, _model), values in self.store.usage_totals(since_minute=midnight).items():
            today[key_id] = today.get(key_id, 0) + values[2] + values[3]
        return today


def _add(table: dict[Any, list[int]], key: Any, counts: list[int]) -> None:
    row = table.get(key)
    if row is None:
        table[key] = list(counts)
    else:
        for i, value in enumerate(counts):
            row[i] += value


class KeyUsageCollector(Collector):
    """Prometheus counters from the per-key totals."""

    def __init__(self, usage: KeyUsage, deployment_name: Callable[[str], str]):
        self.usage = usage
        self.deployment_name = deployment_name

    def collect(self) -> Iterator[Any]:
        labels = ["deployment", "deployment_id", "model", "key_id"]
        texts = {
            "requests": "Requests per key (the key's id, never the key).",
            "errors": "Requests per key answered with a 4xx or 5xx status.",
            "prompt_tokens": "Prompt tokens per key, from the engine's usage.",
            "completion_tokens": "Completion tokens per key, from the engine's usage.",
        }
        families = {name: CounterMetricFamily(f"modeldeploy_key_{name}", texts[name], labels=labels)
                    for name in USAGE_COUNTS}
        for (key_id, dep_id, model), values in list(self.usage.totals.items()):
            label_values = [self.deployment_name(dep_id), dep_id, model, key_id]
            for name, value in zip(USAGE_COUNTS, values):
                families[name].add_metric(label_values, value)
        yield from families.values()
