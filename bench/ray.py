"""Ray placement: scale-out, balancing, the Ray path's added latency and scale-from-zero, with GPU-like replicas.

A local Ray cluster (`jupyter_modeldeploy.ray_local`: a head and two worker nodes) and a Jupyter
server that targets it. Its replicas are the fake engine of the tests (`tests/support/fake_engine.py`)
paced like a GPU-bound engine: a fixed time per output token (`--token-ms`) in a fixed number of
slots (`--slots`), so a replica sleeps rather than computes and its throughput is its own, as on
a GPU cluster where each replica has its own GPU, not the host's shared cores. What it measures
is then the design (the gateway's placement, balancing and Ray path), not this machine.

- scale-out: completion tokens/s of `--clients` closed-loop clients (enough to fill every slot of
  four replicas) through the gateway against 1, 2 and 4 replicas on the two nodes, interleaved
  rounds, medians; ratios against one replica (targets: >= 1.9x and >= 3.6x);
- balancing: two replicas, one on a third node whose engine is paced twice as slow
  (`FAKE_ENGINE_SLOWDOWN=2`): the fast replica's share of the requests (about two thirds);
- the Ray path: p50 of `GET /v1/models` on one kept connection through the gateway to the fake
  engine on a Ray replica against the same engine placed locally (target: <= 0.2 ms added);
- autoscaling: the time from scale-to-zero to the first answer, and from 1 to 4 replicas under load.

`--llamacpp` adds the earlier CPU-bound measure (llama-server on SmolLM2, 1 and 2 replicas), which on
a small machine measures how the host's cores are shared, not the design.

Light clients only (`bench/light_client.py`: raw asyncio keep-alive connections, `http.client`).
Run on a quiet machine: `python bench/ray.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import light_client
from bench.common import free_port, run_load, smollm2_gguf
from jupyter_modeldeploy import ray_local
from tests.support.fake_server import FAKE_ENGINE, fake_llama_server
from tests.support.jupyter import JupyterProcess
from tests.support.ray_cluster import node_of

KEY = "sk-bench-ray"


# Deployments -----------------------------------------------------------------------------------


def fake_config(name: str, slots: int, placement: dict[str, Any] | None = None) -> dict[str, Any]:
    """A llamacpp deployment the paced fake engine serves."""
    return {"kind": "llamacpp", "name": name, "route": name, "model": str(FAKE_ENGINE), "api_key": KEY,
            "parallel": slots, "max_concurrent_requests": 1024,
            **({"placement": placement} if placement else {})}


def on_two_nodes(replicas: int, labels: str = "in(0,1)", **extra: Any) -> dict[str, Any]:
    """`replicas` fixed replicas spread on nodes 0 and 1 (2 CPUs each: a replica of 2 CPUs, or of 1 for 4)."""
    return {"target": "ray", "replicas": {"min": replicas, "max": replicas},
            "resources": {"cpus": 2 if replicas <= 2 else 1, "node_labels": {"modeldeploy-node": labels}}, **extra}


def wait_serving(client: Any, ref: str, replicas: int, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = client.get(ref)
        if record["status"] == "failed":
            raise RuntimeError(record["status_reason"])
        if record["status"] in ("active", "idle") and sum(r["state"] == "serving" for r in record["replicas"]) == replicas:
            return record
        time.sleep(0.2)
    raise RuntimeError(f"{ref}: {replicas} replica(s) did not serve within {timeout:g} s")


def target_of(record: dict[str, Any]) -> tuple[tuple[str, int], str]:
    """The gateway's (host, port) and the endpoint's path prefix."""
    url = urlsplit(record["api_base"])
    return (url.hostname or "127.0.0.1", url.port or 80), url.path


def chat_body(tokens: int) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": tokens}).encode()


HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


def chat_rate(record: dict[str, Any], clients: int, seconds: float, tokens: int) -> float:
    """Completion tokens/s of `clients` closed-loop keep-alive clients (each request asks `tokens` tokens)."""
    target, prefix = target_of(record)
    requests_per_s = light_client.throughput(target, prefix + "/chat/completions", HEADERS, clients, seconds,
                                             chat_body(tokens))
    return requests_per_s * tokens


# Measures ---------------------------------------------------------------------------------------


def scale_out(client: Any, args: argparse.Namespace) -> dict[str, float]:
    """Median tokens/s for 1, 2 and 4 replicas, then 1 again (the drift of the run): one deployment at a time,
    since the two nodes' CPUs hold four replicas, not seven."""
    rates: dict[str, float] = {}
    for label, n in (("1", 1), ("2", 2), ("4", 4), ("1 again", 1)):
        record = wait_serving(client, client.launch(fake_config(f"paced-{n}", args.slots, on_two_nodes(n)))["id"], n)
        nodes = sorted({r["node"][:8] for r in record["replicas"]})
        runs = [chat_rate(record, args.clients, args.seconds, args.tokens) for _ in range(args.rounds)]
        rates[label] = statistics.median(runs)
        print(f"  {label} replica(s) on node(s) {', '.join(nodes)}: {', '.join(f'{r:.0f}' for r in runs)} tok/s",
              flush=True)
        remove(client, record["id"])
    return rates


def remove(client: Any, ref: str, timeout: float = 60) -> None:
    """Delete a deployment and wait until its record is gone (its replicas' CPUs free for the next)."""
    client.delete(ref)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.get(ref)
        except Exception:  # deleted: the record is gone once its replicas ended
            return
        time.sleep(0.3)


def balance(client: Any, cluster: ray_local.LocalCluster, args: argparse.Namespace) -> tuple[float, dict[str, int]]:
    """The fast replica's share of the requests when the other's node paces its engine twice as slow."""
    slow = ray_local.add_node(cluster, "slow", cpus=2, env={"FAKE_ENGINE_SLOWDOWN": "2"})
    try:
        ray_local.wait_for_nodes(cluster.address, len(cluster.alive()))
        record = client.launch(fake_config("paced-balance", args.slots, on_two_nodes(2, "in(0,slow)")))
        record = wait_serving(client, record["id"], 2)
        slow_ids = {r["id"] for r in record["replicas"] if node_of(cluster, r["pid"]).labels["modeldeploy-node"] == "slow"}
        if len(slow_ids) != 1:
            raise RuntimeError(f"expected one replica on the slow node, found {len(slow_ids)}")
        before = {r["id"]: r["requests"] for r in record["replicas"]}
        chat_rate(record, 2 * args.slots, args.seconds, args.tokens)
        time.sleep(1.5)  # the worker's last records reach the server
        after = {r["id"]: r["requests"] for r in client.get(record["id"])["replicas"]}
        remove(client, record["id"])
    finally:
        ray_local.kill_node(slow)
    sent = {rid: after[rid] - before.get(rid, 0) for rid in after}
    fast = [rid for rid in sent if rid not in slow_ids]
    share = sum(sent[r] for r in fast) / max(1, sum(sent.values()))
    return share, sent


def ray_path(client: Any, args: argparse.Namespace) -> tuple[float, float]:
    """Median p50 (ms) of `GET /v1/models` through the gateway: the fake engine placed locally, then on Ray."""
    local = client.launch(fake_config("paced-local", args.slots))
    on_ray = client.launch(fake_config("paced-ray", args.slots, on_two_nodes(1)))
    local, on_ray = wait_serving(client, local["id"], 1), wait_serving(client, on_ray["id"], 1)
    p50: dict[str, list[float]] = {"local": [], "ray": []}
    for _ in range(args.rounds):
        for name, record in (("local", local), ("ray", on_ray)):
            target, prefix = target_of(record)
            latency = light_client.keep_alive_latency(target, prefix + "/models", HEADERS, args.latency_requests)
            p50[name].append(latency.p50_ms)
        print(f"  p50 local {p50['local'][-1]:.3f} ms, ray {p50['ray'][-1]:.3f} ms", flush=True)
    remove(client, local["id"])
    remove(client, on_ray["id"])
    return statistics.median(p50["local"]), statistics.median(p50["ray"])


def first_answer_after_zero(client: Any, args: argparse.Namespace) -> list[float]:
    """Seconds from a request to a deployment scaled to zero to its answer (a replica started meanwhile)."""
    placement = {"target": "ray", "replicas": {"min": 0, "max": 1, "initial": 1},
                 "resources": {"cpus": 1, "node_labels": {"modeldeploy-node": "in(0,1)"}},
                 "autoscaling": {"target_in_flight": 4, "upscale_delay_s": 0, "downscale_delay_s": 2}}
    record = wait_serving(client, client.launch(fake_config("paced-zero", args.slots, placement))["id"], 1)
    target, prefix = target_of(record)
    times = []
    for _ in range(args.wake_rounds):
        deadline = time.monotonic() + 120
        while client.get(record["id"])["status"] != "sleeping":
            if time.monotonic() > deadline:
                raise RuntimeError("the deployment did not scale to zero")
            time.sleep(0.3)
        conn = http.client.HTTPConnection(*target, timeout=300)
        started = time.perf_counter()
        conn.request("POST", prefix + "/chat/completions", chat_body(1), HEADERS)
        answer = conn.getresponse()
        answer.read()
        times.append(time.perf_counter() - started)
        conn.close()
        if answer.status != 200:
            raise RuntimeError(f"the request after scale-to-zero got {answer.status}")
        print(f"  first answer after scale-to-zero: {times[-1]:.2f} s", flush=True)
    remove(client, record["id"])
    return times


def scale_up_time(client: Any, args: argparse.Namespace) -> float:
    """Seconds from the start of a load that needs 4 replicas to 4 serving (from 1; upscale delay 0)."""
    placement = {"target": "ray", "replicas": {"min": 1, "max": 4, "initial": 1},
                 "resources": {"cpus": 1, "node_labels": {"modeldeploy-node": "in(0,1)"}},
                 "autoscaling": {"target_in_flight": args.slots, "upscale_delay_s": 0, "downscale_delay_s": 60}}
    record = wait_serving(client, client.launch(fake_config("paced-up", args.slots, placement))["id"], 1)
    load = threading.Thread(target=chat_rate, args=(record, 4 * args.slots, 60.0, args.tokens), daemon=True)
    started = time.monotonic()
    load.start()
    wait_serving(client, record["id"], 4, timeout=120)
    took = time.monotonic() - started
    load.join()
    remove(client, record["id"])
    return took


# The earlier CPU-bound measure -------------------------------------------------------------------


def llamacpp_scale_out(client: Any, args: argparse.Namespace) -> tuple[float, float]:
    """Tokens/s of 4 clients against 1 and 2 llama-server replicas on SmolLM2 (one engine thread each)."""

    async def tokens_per_s(url: str) -> float:
        body = {"prompt": "Write a long story about the sea.", "max_tokens": 64, "temperature": 0}

        async def one(http: httpx.AsyncClient) -> float:
            response = await http.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"})
            response.raise_for_status()
            return float(response.json()["usage"]["completion_tokens"])

        return (await run_load(4, 6, one)).throughput

    medians = []
    for replicas in (1, 2):
        record = client.launch({
            "kind": "llamacpp", "name": f"smol-{replicas}", "model": str(smollm2_gguf()), "api_key": KEY,
            "threads": 1, "parallel": 2, "ctx_size": 2048,
            "placement": on_two_nodes(replicas) | {"resources": {"cpus": 1}},
        })
        record = wait_serving(client, record["id"], replicas, timeout=600)
        rates = [asyncio.run(tokens_per_s(record["api_base"] + "/completions")) for _ in range(args.rounds)]
        print(f"  llama.cpp {replicas} replica(s): {', '.join(f'{r:.1f}' for r in rates)} tok/s", flush=True)
        medians.append(statistics.median(rates))
        remove(client, record["id"])
    return medians[0], medians[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token-ms", type=float, default=10.0, help="the paced engine's time per output token")
    parser.add_argument("--slots", type=int, default=8, help="the paced engine's slots (llama-server's --parallel)")
    parser.add_argument("--tokens", type=int, default=32, help="output tokens a request asks")
    parser.add_argument("--clients", type=int, default=64, help="closed-loop clients of the scale-out measure")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of load per measure and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-requests", type=int, default=1000)
    parser.add_argument("--wake-rounds", type=int, default=3)
    parser.add_argument("--llamacpp", action="store_true", help="also the CPU-bound llama.cpp measure")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    program = fake_llama_server(home / "bin", "--token-s", str(args.token_ms / 1000))
    cluster = ray_local.start(nodes=2, cpus_per_node=2, port=free_port(), log_dir=home / "ray-logs", record=False)
    server = JupyterProcess(home / "jupyter", extra_args=[
        f"--ModelDeployApp.ray_address={cluster.address}", f"--ModelDeployApp.llamacpp_server={program}",
        "--ModelDeployApp.llamacpp_engine=llama-server", "--ModelDeployApp.health_timeout_s=300"])
    try:
        server.start(timeout=180)
        client = server.client()
        print(f"paced engine: {args.token_ms:g} ms a token, {args.slots} slots; {args.tokens} tokens a request, "
              f"{args.clients} clients", flush=True)
        rates = scale_out(client, args)
        share, sent = balance(client, cluster, args)
        local_p50, ray_p50 = ray_path(client, args)
        wakes = first_answer_after_zero(client, args)
        up = scale_up_time(client, args)
        cpu = llamacpp_scale_out(client, args) if args.llamacpp else None
        one = rates["1"]
        print("\nGPU-like replicas (paced fake engine):")
        print(f"  scale-out: 1 replica {one:.0f} tok/s, 2 replicas {rates['2']:.0f} tok/s ({rates['2'] / one:.2f}x, "
              f"target >= 1.9x), 4 replicas {rates['4']:.0f} tok/s ({rates['4'] / one:.2f}x, target >= 3.6x); "
              f"1 replica again {rates['1 again']:.0f} tok/s")
        print(f"  balancing: the fast replica took {share:.1%} of the requests ({sent}; about 66.7% expected)")
        print(f"  Ray path: GET /v1/models p50 local {local_p50:.3f} ms, on Ray {ray_p50:.3f} ms: "
              f"{ray_p50 - local_p50:+.3f} ms (target <= 0.2 ms)")
        print(f"  first answer after scale-to-zero: median {statistics.median(wakes):.2f} s "
              f"({', '.join(f'{w:.2f}' for w in wakes)})")
        print(f"  1 -> 4 replicas under load: {up:.1f} s")
        if cpu is not None:
            print(f"CPU-bound (llama.cpp, SmolLM2, 1 thread a replica): 1 replica {cpu[0]:.1f} tok/s, 2 replicas "
                  f"{cpu[1]:.1f} tok/s: {cpu[1] / cpu[0]:.2f}x")
    finally:
        server.stop()
        ray_local.stop(cluster)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
