"""What the gateway adds: latency and throughput vs the engine direct and vs jupyter-server-proxy.

    python bench/gateway.py [--requests 300]

One Jupyter server (this extension plus jupyter-server-proxy) and one llama-server serving
SmolLM2. Three paths to the same engine route:
  direct   http://127.0.0.1:<engine port>/v1/models            (engine key)
  gateway  <jupyter>/modeldeploy/endpoints/<route>/v1/models    (deployment key)
  proxy    <jupyter>/proxy/<engine port>/v1/models               (jupyter-server-proxy)
Prints p50/p99 latency with 1 client, request throughput with 1 and 16 clients on a trivial
route (pure overhead), completion tokens/s with 16 clients (overhead next to real engine work)
and streaming time-to-first-chunk, each as a ratio to direct. Targets: p50 added <= 1 ms, gateway
throughput >= 95% of direct, first-chunk delay unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import run_load, smollm2_gguf, temp_jupyter

KEY = "sk-bench-gateway-key"


def engine_port(pid: int) -> int:
    """The loopback port of the engine under a deployment's guardian process (bench only)."""
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        cmd = proc.cmdline()
        if "--port" in cmd and "llama-server" in " ".join(cmd[:1]):
            return int(cmd[cmd.index("--port") + 1])
    raise RuntimeError("engine port not found")


async def latency_and_throughput(url: str, headers: dict[str, str], requests: int) -> dict[str, float]:
    async def one(client: httpx.AsyncClient) -> float:
        response = await client.get(url, headers=headers)
        response.raise_for_status()
        return 1.0

    single = await run_load(1, requests, one)
    many = await run_load(16, max(requests // 8, 20), one)
    return {"p50_ms": single.pct(50) * 1000, "p99_ms": single.pct(99) * 1000, "rps_1": single.throughput,
            "rps_16": many.throughput, "p50_16_ms": many.pct(50) * 1000}


async def inference_throughput(url: str, headers: dict[str, str], requests: int) -> float:
    """Completion tokens/s with 16 clients: the gateway's cost next to real engine work."""
    async def one(client: httpx.AsyncClient) -> float:
        body = {"model": "m", "prompt": "Once upon a time", "max_tokens": 8, "ignore_eos": True}
        response = await client.post(url, json=body, headers=headers)
        response.raise_for_status()
        return float(response.json()["usage"]["completion_tokens"])

    return (await run_load(16, requests, one)).throughput


async def first_chunk(url: str, headers: dict[str, str], runs: int) -> float:
    """Median seconds to the first streamed chunk of a chat completion."""
    times = []
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16, "stream": True,
            "ignore_eos": True}
    async with httpx.AsyncClient(timeout=120) as client:
        for _ in range(runs):
            started = time.perf_counter()
            async with client.stream("POST", url, json=body, headers={**headers, "Accept": "*/*"}) as response:
                first = True
                async for _chunk in response.aiter_bytes():
                    if first:
                        times.append(time.perf_counter() - started)
                        first = False
    times.sort()
    return times[len(times) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--stream-runs", type=int, default=9)
    parser.add_argument("--inference-requests", type=int, default=4, help="completions per client (16 clients)")
    args = parser.parse_args()
    server = temp_jupyter()  # jupyter-server-proxy is enabled by its own config file
    try:
        client = server.client()
        record = client.launch({"kind": "llamacpp", "name": "bench", "model": str(smollm2_gguf()), "api_key": KEY,
                                "threads": 1, "parallel": 4})
        record = client.wait(record["id"], timeout=300)
        port = engine_port(record["pid"])
        engine_key = (server.state_dir / "deployments" / record["id"] / "engine.key").read_text().strip()
        paths = {
            "direct": (f"http://127.0.0.1:{port}/v1", {"Authorization": f"Bearer {engine_key}"}),
            "gateway": (record["api_base"], {"Authorization": f"Bearer {KEY}"}),
            "proxy": (f"{server.url}proxy/{port}/v1", {"X-Api-Key": engine_key}),
        }
        token_q = f"?token={server.token}"
        results = {}
        for name, (base, headers) in paths.items():
            url = base + "/models" + (token_q if name == "proxy" else "")
            results[name] = asyncio.run(latency_and_throughput(url, headers, args.requests))
            stream_url = base + "/chat/completions" + (token_q if name == "proxy" else "")
            results[name]["first_chunk_ms"] = asyncio.run(first_chunk(stream_url, headers, args.stream_runs)) * 1000
            completions_url = base + "/completions" + (token_q if name == "proxy" else "")
            results[name]["tok_s_16"] = asyncio.run(inference_throughput(completions_url, headers, args.inference_requests))
            r = results[name]
            print(f"{name:8} p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  1 client {r['rps_1']:7.0f} req/s  "
                  f"16 clients {r['rps_16']:7.0f} req/s (p50 {r['p50_16_ms']:6.2f} ms)  "
                  f"first chunk {r['first_chunk_ms']:7.1f} ms  completions 16 clients {r['tok_s_16']:6.1f} tok/s", flush=True)
        d, g, p = results["direct"], results["gateway"], results["proxy"]
        print()
        print(f"gateway p50 added: {g['p50_ms'] - d['p50_ms']:+.2f} ms (target <= 1 ms); "
              f"proxy p50 added: {p['p50_ms'] - d['p50_ms']:+.2f} ms")
        print(f"throughput vs direct, 1 client: gateway {g['rps_1'] / d['rps_1']:.2f}x, proxy {p['rps_1'] / d['rps_1']:.2f}x")
        print(f"throughput vs direct, 16 clients: gateway {g['rps_16'] / d['rps_16']:.2f}x (target >= 0.95), "
              f"proxy {p['rps_16'] / d['rps_16']:.2f}x")
        print(f"completion tokens/s vs direct, 16 clients: gateway {g['tok_s_16'] / d['tok_s_16']:.2f}x, "
              f"proxy {p['tok_s_16'] / d['tok_s_16']:.2f}x")
        print(f"first chunk vs direct: gateway {g['first_chunk_ms'] / d['first_chunk_ms']:.2f}x, "
              f"proxy {p['first_chunk_ms'] / d['first_chunk_ms']:.2f}x")
        client.delete(record["id"])
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
