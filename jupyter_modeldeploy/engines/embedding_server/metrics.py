"""Prometheus metrics of the embedding server, in its own registry (never the global one).

Named by stage as text-embeddings-inference does: queue, tokenization and inference
durations, batch size; plus the memory state and swaps of each model.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .memory import STATES, MemoryManager

_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)


class Metrics:
    """Every metric the server exports, labelled by served model name."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "embedding_requests",
            "Requests answered, by endpoint and HTTP status.",
            ["model", "endpoint", "status"],
            registry=r,
        )
        self.rejected = Counter(
            "embedding_rejected_requests",
            "Requests refused before inference, by reason.",
            ["model", "reason"],
            registry=r,
        )
        self.in_flight = Gauge(
            "embedding_requests_in_flight", "Requests being served.", ["model"], registry=r
        )
        self.queue_size = Gauge("embedding_queue_size", "Inputs waiting for a batch.", ["model"], registry=r)
        self.input_tokens = Counter("embedding_input_tokens", "Tokens embedded.", ["model"], registry=r)
        self.queue_duration = Histogram(
            "embedding_queue_duration_seconds",
            "Time an input waits in the queue before its batch starts.",
            ["model"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.tokenization_duration = Histogram(
            "embedding_tokenization_duration_seconds",
            "Time to tokenize one request.",
            ["model"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "embedding_inference_duration_seconds",
            "Time of one batch's forward pass.",
            ["model"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "embedding_batch_size", "Inputs in one batch.", ["model"], buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "embedding_batch_tokens",
            "Padded tokens in one batch.",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.model_state = Gauge(
            "embedding_model_state",
            "1 for the model's current memory state, 0 for the others.",
            ["model", "state"],
            registry=r,
        )
        self.model_device_bytes = Gauge(
            "embedding_model_device_bytes", "Bytes the model holds on the device.", ["model"], registry=r
        )
        self.swaps = Gauge(
            "embedding_model_swaps",
            "Times the model was brought back (in) or evicted (out).",
            ["model", "direction"],
            registry=r,
        )
        self.swap_seconds = Gauge(
            "embedding_model_swap_seconds",
            "Seconds spent bringing the model back (in) or evicting it (out).",
            ["model", "direction"],
            registry=r,
        )
        self.budget_bytes = Gauge(
            "embedding_memory_budget_bytes", "The device memory budget (0: none).", registry=r
        )
        self.used_bytes = Gauge(
            "embedding_memory_used_bytes", "Bytes the models hold on the device.", registry=r
        )

    def update_memory(self, manager: MemoryManager, name: str) -> None:
        """Copy one model's memory state and swap totals into the gauges."""
        state = manager.state(name)
        for s in STATES:
            self.model_state.labels(name, s).set(1 if state.state == s else 0)
        self.model_device_bytes.labels(name).set(state.charged_bytes)
        self.in_flight.labels(name).set(state.in_flight)
        swaps_in, seconds_in, swaps_out, seconds_out = manager.swap_totals(name)
        self.swaps.labels(name, "in").set(swaps_in)
        self.swaps.labels(name, "out").set(swaps_out)
        self.swap_seconds.labels(name, "in").set(seconds_in)
        self.swap_seconds.labels(name, "out").set(seconds_out)
        self.budget_bytes.set(manager.budget_bytes or 0)
        self.used_bytes.set(manager.used_bytes())

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
