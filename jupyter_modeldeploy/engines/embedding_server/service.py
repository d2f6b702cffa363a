"""One model's serving machinery: admission (429), tokenization threads, the queue's single consumer.

Embedding models and cross-encoders share it: both tokenize into rows, queue them, and get one
output row per input back (a vector, or a one-element logit).

The consumer takes a batch, makes sure the model is on the device (the memory manager
may have to bring it back), runs the forward pass on the model's own inference thread
and hands each input its row.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ...config.embedding import EmbeddingModelEntry
from .batcher import BatchQueue, Entry, padded_tokens
from .loader import ModelRuntime
from .memory import MemoryManager
from .metrics import Metrics

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The model has `max_concurrent_requests` requests in flight already."""


class ModelService:
    """Serves one model entry of the deployment."""

    def __init__(
        self, entry: EmbeddingModelEntry, runtime: ModelRuntime, memory: MemoryManager, metrics: Metrics
    ) -> None:
        self.entry = entry
        self.name = entry.name
        self.runtime = runtime
        self.memory = memory
        self.metrics = metrics
        self.queue = BatchQueue(entry.max_batch_tokens, entry.max_batch_requests)
        self.tokenization_workers = entry.tokenization_workers or os.cpu_count() or 1
        self._tokenizers = ThreadPoolExecutor(
            self.tokenization_workers, thread_name_prefix=f"tok-{self.name}"
        )
        self._inference = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{self.name}")
        self._consumer: asyncio.Task[None] | None = None
        self.in_flight = 0

    def start(self) -> None:
        """Start the queue's consumer on the running loop."""
        self._consumer = asyncio.get_running_loop().create_task(self._consume(), name=f"consumer-{self.name}")

    def admit(self) -> None:
        """Count a new request in, or raise Overloaded at once when the model is at its limit."""
        if self.in_flight >= self.entry.max_concurrent_requests:
            self.metrics.rejected.labels(self.name, "overloaded").inc()
            raise Overloaded(
                f"model {self.name} has {self.in_flight} requests in flight, its limit "
                f"(max_concurrent_requests={self.entry.max_concurrent_requests}); retry later"
            )
        self.in_flight += 1
        self.memory.request_started(self.name)

    def release(self) -> None:
        """Count a request out (answered, failed or abandoned)."""
        self.in_flight -= 1
        self.memory.request_finished(self.name)

    async def embed(
        self, items: list[str | list[int]], truncate: bool, prompt: str = "", left: bool = False
    ) -> tuple[list[Any], int]:
        """Rows (float32 tensors, not normalized) for the inputs, and their total token count."""
        return await self._run(self.runtime.tokenize, items, truncate, prompt, left)

    async def score(self, query: str, texts: list[str], truncate: bool, left: bool = False) -> tuple[list[Any], int]:
        """A cross-encoder's logits (one-element rows) for (query, text) pairs, and their token count."""
        return await self._run(self.runtime.tokenize_pairs, query, texts, truncate, left)

    async def _run(self, tokenize: Callable[..., list[dict[str, list[int]]]], *args: Any) -> tuple[list[Any], int]:
        """Tokenize on a tokenizer thread, queue each row for the consumer, wait for every result."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        rows = await loop.run_in_executor(self._tokenizers, tokenize, *args)
        self.metrics.tokenization_duration.labels(self.name).observe(time.perf_counter() - started)
        futures: list[asyncio.Future[Any]] = []
        tokens = 0
        for row in rows:
            count = len(row["input_ids"])
            tokens += count
            future: asyncio.Future[Any] = loop.create_future()
            self.queue.put(Entry(row, count, future))
            futures.append(future)
        self.metrics.queue_size.labels(self.name).set(len(self.queue))
        try:
            vectors = await asyncio.gather(*futures)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        self.metrics.input_tokens.labels(self.name).inc(tokens)
        return list(vectors), tokens

    def activate(self, rows: list[Any], raw: bool) -> list[float]:
        """A cross-encoder's scores from its logit rows: the model's activation unless `raw`."""
        import torch

        logits = torch.stack(rows)[:, 0]
        if not raw and self.runtime.activation is not None:
            logits = self.runtime.activation(logits)
        return [float(x) for x in logits]

    @staticmethod
    def postprocess(rows: list[Any], normalize: bool, dimensions: int | None) -> Any:
        """Stack rows into a matrix; keep the first `dimensions` (renormalized) and L2-normalize if asked."""
        import torch

        matrix = torch.stack(rows)
        if dimensions is not None and dimensions < matrix.shape[1]:
            matrix = matrix[:, :dimensions]
            normalize = True  # Matryoshka truncation: the shortened vector is renormalized
        if normalize:
            matrix = torch.nn.functional.normalize(matrix, p=2.0, dim=-1)
        return matrix

    @staticmethod
    def sparse_pairs(row: Any) -> list[tuple[int, float]]:
        """The non-zero (index, value) pairs of one SPLADE vector."""
        import torch

        indices = torch.nonzero(row).flatten()
        return list(zip(indices.tolist(), row[indices].tolist(), strict=True))

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        labels = self.name
        while True:
            batch = await self.queue.next_batch()
            self.metrics.queue_size.labels(labels).set(len(self.queue))
            batch = [e for e in batch if not e.future.done()]
            if not batch:
                continue
            try:
                await self.memory.ensure_on_device(self.name)
                now = time.perf_counter()
                for entry in batch:
                    self.metrics.queue_duration.labels(labels).observe(now - entry.enqueued)
                self.metrics.batch_size.labels(labels).observe(len(batch))
                self.metrics.batch_tokens.labels(labels).observe(padded_tokens([e.tokens for e in batch]))
                output = await loop.run_in_executor(
                    self._inference, self.runtime.forward, [e.features for e in batch]
                )
                self.metrics.inference_duration.labels(labels).observe(time.perf_counter() - now)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed batch fails its requests, never the consumer
                log.exception("batch of %d inputs for model %s failed", len(batch), self.name)
                for entry in batch:
                    if not entry.future.done():
                        entry.future.set_exception(exc)
                continue
            self.memory.touch(self.name)
            for i, entry in enumerate(batch):
                if not entry.future.done():
                    entry.future.set_result(output[i])

    async def stop(self) -> None:
        """Stop the consumer and the worker threads."""
        if self._consumer is not None:
            self._consumer.cancel()
            try:
                await self._consumer
            except asyncio.CancelledError:
                pass
        self._tokenizers.shutdown(wait=False, cancel_futures=True)
        self._inference.shutdown(wait=False, cancel_futures=True)
