"""Load through the gateway and on an engine's own socket: the benchmarks' load loop, and the figures it gives."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from bench.common import run_load


def corpus(n: int) -> list[str]:
    """`n` distinct sentences of ordinary length (deterministic)."""
    subjects = ["The engine", "A gateway", "The notebook", "Each replica", "The GPU", "A tokenizer", "The server"]
    verbs = ["serves", "measures", "batches", "streams", "offloads", "encodes", "admits"]
    objects = ["requests from many clients", "embeddings of short texts", "tokens at a steady rate",
               "models between memory tiers", "vectors for a search index"]
    return [f"{subjects[i % 7]} {verbs[(i // 7) % 7]} {objects[(i // 49) % 5]} (sentence {i})." for i in range(n)]


def embed_throughput(url: str, key: str, texts: list[str], clients: int, *, uds: str | None = None) -> dict[str, float]:
    """Sentences per second with `clients` concurrent clients, one sentence a request, `texts` shared out."""
    per_client = max(1, len(texts) // clients)
    counter = iter(range(10**9))

    async def one(client: httpx.AsyncClient) -> float:
        text = texts[next(counter) % len(texts)]
        response = await client.post(url, json={"input": [text], "model": "minilm"},
                                     headers={"Authorization": f"Bearer {key}"})
        response.raise_for_status()
        return 1.0

    result = asyncio.run(run_load(clients, per_client, one, uds=uds))
    return {"sentences_per_s": round(result.throughput, 1), "p50_ms": round(1000 * result.pct(50), 1),
            "p99_ms": round(1000 * result.pct(99), 1), "requests": len(result.latencies_s)}


def completion_throughput(url: str, key: str, clients: int, requests_per_client: int, tokens: int,
                          *, uds: str | None = None) -> dict[str, Any]:
    """Generated tokens per second with `clients` concurrent clients (`ignore_eos`: every answer `tokens` long)."""

    async def one(client: httpx.AsyncClient) -> float:
        body = {"model": "m", "prompt": "Write a story about a lighthouse keeper.", "max_tokens": tokens,
                "temperature": 0.8, "ignore_eos": True}
        response = await client.post(url, json=body, headers={"Authorization": f"Bearer {key}"})
        response.raise_for_status()
        return float(response.json()["usage"]["completion_tokens"])

    result = asyncio.run(run_load(clients, requests_per_client, one, uds=uds))
    return {"tokens_per_s": round(result.throughput, 1), "p50_s": round(result.pct(50), 3),
            "requests": len(result.latencies_s)}
