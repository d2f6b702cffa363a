"""Prometheus exposition: request counters and histograms, plus gauges read at scrape time.

One unit per metric name; labels `deployment` (name), `deployment_id` and `model`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LABELS = ("deployment", "deployment_id", "model")


class RequestMetrics:
    """Counters and histograms updated by the gateway for each finished request."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "modeldeploy_requests", "Requests answered through the gateway.", (*LABELS, "code"), registry=registry
        )
        self.duration = Histogram(
            "modeldeploy_request_duration_seconds", "Time from request to the end of the response.", LABELS,
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.first_chunk = Histogram(
            "modeldeploy_time_to_first_chunk_seconds", "Time to the first response chunk of streamed responses.",
            LABELS, buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.prompt_tokens = Counter(
            "modeldeploy_prompt_tokens", "Prompt tokens reported by the engine's usage.", LABELS, registry=registry
        )
        self.completion_tokens = Counter(
            "modeldeploy_completion_tokens", "Completion tokens reported by the engine's usage.", LABELS,
            registry=registry,
        )
        # Each metric's children by label values: `labels()` costs more than the update itself, once a request.
        self._children: dict[int, dict[tuple[str, ...], Any]] = {}

    def child(self, metric: Counter | Histogram, *values: str) -> Any:
        """`metric.labels(*values)`, looked up once (a series, once made, is never removed)."""
        made = self._children.setdefault(id(metric), {})
        found = made.get(values)
        if found is None:
            found = made[values] = metric.labels(*values)
        return found


class GaugeCollector(Collector):
    """Gauges (and counters: names ending in `_total`) computed at scrape time from a snapshot function.

    The snapshot returns (name, help, label names, [(label values, value), ...]) tuples.
    """

    def __init__(self, snapshot: Callable[[], list[tuple[str, str, tuple[str, ...], list[tuple[tuple[str, ...], float]]]]]):
        self.snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        for name, text, labels, samples in self.snapshot():
            kind = CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
            family = kind(name, text, labels=list(labels))
            for values, value in samples:
                family.add_metric(list(values), value)
            yield family


class OneDeployment(Collector):
    """Another registry's metrics, only the samples labelled with one deployment id (for its read keys)."""

    def __init__(self, registry: CollectorRegistry, deployment_id: str):
        self.registry = registry
        self.deployment_id = deployment_id

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            samples = [s for s in family.samples if s.labels.get("deployment_id") == self.deployment_id]
            if samples:
                kept = Metric(family.name, family.documentation, family.type, family.unit)
                kept.samples = samples
                yield kept
