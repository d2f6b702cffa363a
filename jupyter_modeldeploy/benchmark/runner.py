"""Run a concurrency sweep through a deployment's gateway: streamed chat completions, timed token by token."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from .sweep import Sample, StepResult, concurrency_limit, steps, summarize

DEFAULT_PROMPT = "Write a short story about a robot learning to paint."


class BenchmarkError(ValueError):
    """A benchmark that cannot run on this deployment; the message says why."""


@dataclass(frozen=True)
class Settings:
    """What the sweep sends: the prompt, the output length, the top concurrency, requests per client per step."""

    prompt: str = DEFAULT_PROMPT
    max_tokens: int = 64
    max_concurrency: int = 8
    requests_per_client: int = 2
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.prompt:
            raise BenchmarkError("the prompt is empty")
        if not 1 <= self.max_tokens <= 4096:
            raise BenchmarkError("max_tokens must be between 1 and 4096")
        if not 1 <= self.max_concurrency <= 256:
            raise BenchmarkError("max_concurrency must be between 1 and 256")
        if not 1 <= self.requests_per_client <= 100:
            raise BenchmarkError("requests_per_client must be between 1 and 100")


def chat_model(record: dict[str, Any]) -> str:
    """The chat model a sweep talks to; BenchmarkError for deployments that serve none."""
    if not record.get("serving"):
        raise BenchmarkError(f"deployment {record.get('name')!r} is {record.get('status')}: benchmark a serving one")
    chats = [m["name"] for m in record.get("models") or [] if m.get("task") == "chat"]
    if not chats:
        raise BenchmarkError(f"deployment {record.get('name')!r} serves no chat model: the sweep measures tokens")
    return chats[0]


async def _one(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> Sample:
    started = time.perf_counter()
    times: list[float] = []
    usage_tokens: int | None = None
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return Sample(started, time.perf_counter(), error=f"HTTP {response.status_code}")
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if event.get("usage"):
                    usage_tokens = int(event["usage"].get("completion_tokens") or 0)
                for choice in event.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        times.append(time.perf_counter())
    except (httpx.HTTPError, ValueError) as exc:
        return Sample(started, time.perf_counter(), times, len(times), error=type(exc).__name__)
    return Sample(started, time.perf_counter(), times, usage_tokens if usage_tokens else len(times))


async def run_step(api_base: str, key: str | None, model: str, concurrency: int, settings: Settings) -> StepResult:
    """`concurrency` clients, each sending `requests_per_client` streamed requests one after another."""
    body = {"model": model, "messages": [{"role": "user", "content": settings.prompt}],
            "max_tokens": settings.max_tokens, "stream": True, "temperature": 0}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, timeout=settings.timeout_s, limits=limits) as client:

        async def client_loop() -> list[Sample]:
            return [await _one(client, api_base.rstrip("/") + "/chat/completions", body)
                    for _ in range(settings.requests_per_client)]

        batches = await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return summarize(concurrency, [s for batch in batches for s in batch])


def run_sweep(record: dict[str, Any], key: str | None, settings: Settings,
              on_step: Callable[[StepResult], None] | None = None) -> dict[str, Any]:
    """The whole sweep against a deployment record; returns the result with the configuration it ran on."""
    model = chat_model(record)
    config = record.get("config") or {}
    plan = steps(settings.max_concurrency, concurrency_limit(config))
    result: dict[str, Any] = {
        "id": f"b-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(3)}",
        "deployment": record.get("name"), "deployment_id": record.get("id"), "kind": record.get("kind"),
        "model": model, "config": config, "started_at": time.time(),
        "settings": {"prompt": settings.prompt, "max_tokens": settings.max_tokens,
                     "max_concurrency": settings.max_concurrency, "requests_per_client": settings.requests_per_client},
        "steps": [],
    }
    if plan[-1] < settings.max_concurrency:
        result["note"] = f"capped at {plan[-1]} clients: the deployment's max_concurrent_requests"
    for concurrency in plan:
        step = asyncio.run(run_step(record["api_base"], key, model, concurrency, settings))
        result["steps"].append(step.to_json())
        if on_step is not None:
            on_step(step)
    result["ended_at"] = time.time()
    return result


def benchmark(client: Any, ref: str, settings: Settings, *, key: str | None = None,
              on_step: Callable[[StepResult], None] | None = None, save_to: Any = None) -> dict[str, Any]:
    """Sweep a deployment found through the REST `client` and save the result (to `save_to`, else the default folder).

    Without `key`, a token scoped to the deployment is made for the sweep and revoked after it.
    """
    from .results import save

    record = client.get(ref)
    chat_model(record)  # refuse before making a token
    token_id = None
    if key is None and not record.get("public"):
        made = client.create_token(deployment=record["id"], name="benchmark", expires_in_s=6 * 3600)
        key, token_id = made["token"], made["id"]
    try:
        result = run_sweep(record, key, settings, on_step)
    finally:
        if token_id is not None:
            client.revoke_token(token_id)
    result["file"] = str(save(result, save_to))
    return result
