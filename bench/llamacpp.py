"""Aggregate tokens/s of llama-server (4 slots) and the llama_cpp.server fallback, 1 vs 4 clients,
and llama-server at 4 clients through the gateway against direct.

    python bench/llamacpp.py [--tokens 32] [--requests 4] [--rounds 3]

Prints each engine's throughput with 1 and 4 concurrent clients and the ratio 4/1 (the
engine's own scaling; the fallback serves one request at a time and does not scale), then a
deployment's 4-client throughput through the gateway and on the engine's own socket, in
interleaved rounds (target: gateway >= 0.97x direct). Same SmolLM2 GGUF, same machine, same run.
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

from bench.common import engine_socket, free_port, run_load, smollm2_gguf, start_engine, temp_jupyter
from jupyter_modeldeploy.config import parse_config
from jupyter_modeldeploy.engines.base import EngineSettings, LaunchContext
from jupyter_modeldeploy.engines.llamacpp import ENGINE


async def measure(port: int, key: str, clients: int, requests: int, tokens: int, *, url: str | None = None,
                  uds: str | None = None) -> float:
    url = url or f"http://127.0.0.1:{port}/v1/completions"
    headers = {"Authorization": f"Bearer {key}"}

    async def one(client: httpx.AsyncClient) -> float:
        body = {"model": "m", "prompt": "Write a story about a lighthouse keeper.", "max_tokens": tokens,
                "temperature": 0.8, "ignore_eos": True}
        response = await client.post(url, json=body, headers=headers)
        response.raise_for_status()
        return float(response.json()["usage"]["completion_tokens"])

    result = await run_load(clients, requests, one, uds=uds)
    return result.throughput


def bench_gateway(args: argparse.Namespace) -> tuple[float, float]:
    """Median 4-client tok/s of one deployment through the gateway and direct on its socket."""
    key = "sk-bench-llamacpp"
    server = temp_jupyter()
    try:
        client = server.client()
        record = client.launch({"kind": "llamacpp", "name": "bench-gw", "model": str(smollm2_gguf()), "api_key": key,
                                "parallel": 4, "threads": args.threads, "ctx_size": 4096})
        record = client.wait(record["id"], timeout=300)
        sock, engine_key = engine_socket(server, record)
        via, direct = [], []
        for _ in range(args.rounds):
            direct.append(asyncio.run(measure(0, engine_key, 4, args.requests, args.tokens,
                                              url="http://engine/v1/completions", uds=sock)))
            via.append(asyncio.run(measure(0, key, 4, args.requests, args.tokens, url=record["api_base"] + "/completions")))
            print(f"  round: direct {direct[-1]:7.1f} tok/s, gateway {via[-1]:7.1f} tok/s", flush=True)
        client.delete(record["id"])
    finally:
        server.stop()
    return sorted(via)[len(via) // 2], sorted(direct)[len(direct) // 2]


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
    parser.add_argument("--rounds", type=int, default=3, help="interleaved gateway/direct rounds")
    args = parser.parse_args()
    print("llama.cpp engines, SmolLM2-135M Q4_1, aggregate completion tokens/s")
    server = bench_engine("llama-server", "llama-server", args)
    try:
        fallback = bench_engine("llama_cpp.server", "llama-cpp-python", args)
    except Exception as exc:  # the fallback is optional: say why it was skipped
        print(f"  llama_cpp.server skipped: {exc}")
        fallback = None
    print("llama-server deployment, 4 clients, through the gateway and direct (interleaved rounds)")
    via, direct = bench_gateway(args)
    print(f"\nllama-server 4 clients / 1 client: {server[4] / server[1]:.2f}x (the engine's own scaling)")
    print(f"llama-server 4 clients through the gateway / direct: {via / direct:.2f}x (target >= 0.97x)")
    if fallback:
        print(f"llama_cpp.server 4 clients / 1 client: {fallback[4] / fallback[1]:.2f}x")
        print(f"llama-server / llama_cpp.server at 4 clients: {server[4] / fallback[4]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
