"""Aggregate tokens/s of llama-server (4 slots) and the llama_cpp.server fallback, 1 vs 4 clients.

    python bench/llamacpp.py [--tokens 32] [--requests 4]

Prints each engine's throughput with 1 and 4 concurrent clients and the ratio 4/1 (target
for llama-server: >= 2x; the fallback serves one request at a time and does not scale).
Both engines run the same SmolLM2 GGUF on the same machine in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import free_port, run_load, smollm2_gguf, start_engine
from jupyter_modeldeploy.config import parse_config
from jupyter_modeldeploy.engines.base import EngineSettings, LaunchContext
from jupyter_modeldeploy.engines.llamacpp import ENGINE


async def measure(port: int, key: str, clients: int, requests: int, tokens: int) -> float:
    url = f"http://127.0.0.1:{port}/v1/completions"
    headers = {"Authorization": f"Bearer {key}"}

    async def one(client: httpx.AsyncClient) -> float:
        body = {"model": "m", "prompt": "Write a story about a lighthouse keeper.", "max_tokens": tokens,
                "temperature": 0.8, "ignore_eos": True}
        response = await client.post(url, json=body, headers=headers)
        response.raise_for_status()
        return float(response.json()["usage"]["completion_tokens"])

    result = await run_load(clients, requests, one)
    return result.throughput


def bench_engine(label: str, engine_choice: str, args: argparse.Namespace) -> dict[int, float]:
    work = Path(tempfile.mkdtemp(prefix="bench-llama-"))
    port = free_port()
    key = secrets.token_urlsafe(16)
    config = parse_config({"kind": "llamacpp", "name": "bench", "model": str(smollm2_gguf()), "parallel": 4,
                           "threads": args.threads, "ctx_size": 4096})
    ctx = LaunchContext(port=port, engine_key=key, work_dir=work, settings=EngineSettings(llamacpp_engine=engine_choice))
    plan = ENGINE.plan(config, ctx)
    for name, content in plan.files.items():
        (work / name).write_text(content)
    proc = start_engine(plan.argv, plan.env, port, plan.health_path, key)
    try:
        results = {}
        for clients in (1, 4):
            results[clients] = asyncio.run(measure(port, key, clients, args.requests, args.tokens))
            print(f"  {label:<18} {clients} client(s): {results[clients]:7.1f} tok/s", flush=True)
        return results
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=32, help="completion tokens per request")
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print("llama.cpp engines, SmolLM2-135M Q4_1, aggregate completion tokens/s")
    server = bench_engine("llama-server", "llama-server", args)
    try:
        fallback = bench_engine("llama_cpp.server", "llama-cpp-python", args)
    except Exception as exc:  # the fallback is optional: say why it was skipped
        print(f"  llama_cpp.server skipped: {exc}")
        fallback = None
    print(f"\nllama-server 4 clients / 1 client: {server[4] / server[1]:.2f}x (target >= 2x)")
    if fallback:
        print(f"llama_cpp.server 4 clients / 1 client: {fallback[4] / fallback[1]:.2f}x")
        print(f"llama-server / llama_cpp.server at 4 clients: {server[4] / fallback[4]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
