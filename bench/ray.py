"""Ray placement: aggregate tokens/s with 1 and 2 replicas on two nodes, and the gateway's added latency.

A local two-node Ray cluster (`jupyter_modeldeploy.ray_local`, one CPU per node) and a Jupyter
server that targets it. Each replica is llama-server on SmolLM2 with one engine thread.

- scale-out: tokens/s of 4 concurrent clients against a 2-replica deployment over the same
  load against a 1-replica deployment, both through the gateway (target: >= 1.7x);
- added latency: p50 of one-token completions through the gateway minus the same requests
  sent straight to a replica's engine on its node (target: <= 1 ms).

Run on a quiet machine: `python bench/ray.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import free_port, run_load, smollm2_gguf
from jupyter_modeldeploy import ray_local
from tests.support.jupyter import JupyterProcess

KEY = "sk-bench-ray"


def launch(client, name: str, replicas: int) -> dict:  # type: ignore[no-untyped-def]
    record = client.launch({
        "kind": "llamacpp", "name": name, "model": str(smollm2_gguf()), "api_key": KEY, "threads": 1,
        "parallel": 2, "ctx_size": 2048,
        "placement": {"target": "ray", "replicas": {"min": replicas, "max": replicas}, "resources": {"cpus": 1}},
    })
    for _ in range(600):
        record = client.get(record["id"])
        if sum(r["state"] == "serving" for r in record["replicas"]) == replicas:
            return record
        if record["status"] == "failed":
            raise RuntimeError(record["status_reason"])
        time.sleep(0.5)
    raise RuntimeError(f"{name}: replicas did not serve")


async def tokens_per_s(url: str, key: str, clients: int, requests: int, tokens: int) -> float:
    body = {"prompt": "Write a long story about the sea.", "max_tokens": tokens, "temperature": 0}

    async def one(client: httpx.AsyncClient) -> float:
        response = await client.post(url, json=body, headers={"Authorization": f"Bearer {key}"})
        response.raise_for_status()
        return float(response.json()["usage"]["completion_tokens"])

    return (await run_load(clients, requests, one)).throughput


async def p50_ms(url: str, key: str, requests: int) -> float:
    body = {"prompt": "Hi", "max_tokens": 1, "temperature": 0}

    async def one(client: httpx.AsyncClient) -> float:
        response = await client.post(url, json=body, headers={"Authorization": f"Bearer {key}"})
        response.raise_for_status()
        return 1.0

    return (await run_load(1, requests, one)).pct(50) * 1000


def engine_key(record: dict) -> str:
    """A replica engine's private key, from its work folder on the node (the nodes are on this machine)."""
    found = sorted(Path(tempfile.gettempdir()).glob(f"modeldeploy-{record['id']}-*/engine.key"))
    if not found:
        raise RuntimeError("no replica work folder found on this machine")
    return found[0].read_text().strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6, help="requests per client and round")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-requests", type=int, default=200)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    cluster = ray_local.start(nodes=2, cpus_per_node=1, port=free_port(), log_dir=home / "ray-logs", record=False)
    server = JupyterProcess(home / "jupyter", extra_args=[f"--ModelDeployApp.ray_address={cluster.address}"])
    try:
        server.start(timeout=180)
        client = server.client()
        results: dict[int, list[float]] = {1: [], 2: []}
        for replicas in (1, 2):
            record = launch(client, f"bench-ray-{replicas}", replicas)
            for _ in range(args.rounds):
                results[replicas].append(asyncio.run(tokens_per_s(record["api_base"] + "/completions", KEY, 4,
                                                                  args.requests, args.tokens)))
                print(f"  {replicas} replica(s): {results[replicas][-1]:7.1f} tok/s", flush=True)
            if replicas == 1:
                direct_url = f"http://{record['replicas'][0]['address']}/v1/completions"
                direct = asyncio.run(p50_ms(direct_url, engine_key(record), args.latency_requests))
                via = asyncio.run(p50_ms(record["api_base"] + "/completions", KEY, args.latency_requests))
            client.delete(record["id"])
        one, two = (sorted(results[n])[len(results[n]) // 2] for n in (1, 2))
        print(f"scale-out: 1 replica {one:.1f} tok/s, 2 replicas {two:.1f} tok/s: {two / one:.2f}x (target >= 1.7x)")
        print(f"added p50 on the Ray path: direct {direct:.2f} ms, via gateway {via:.2f} ms: "
              f"+{via - direct:.2f} ms (target <= 1 ms)")
    finally:
        server.stop()
        ray_local.stop(cluster)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
