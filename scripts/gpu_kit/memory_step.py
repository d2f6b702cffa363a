"""Step 3: Universal Memory on the GPU: two models under a budget that holds one, swapped back from CPU RAM
and from disk, timed by the engine, and the GPU memory the offloaded one gives back."""

from __future__ import annotations

from typing import Any

import httpx

from bench.common import engine_socket

from .host import API_KEY, Host, engine_gpu, engine_pids, gpu_used
from .steps import Step

ROUNDS = 4
GOALS_S = {"cpu_offload": 1.0, "disk_swap": 3.0}
BUDGET_GIB = 0.12  # one fp32 MiniLM (about 87 MiB) fits, two do not


def config(host: Host, mode: str) -> dict[str, Any]:
    """Two MiniLMs (mean and cls pooling) under a budget that holds one; `mode` is cpu_offload or disk_swap."""
    cfg: dict[str, Any] = {
        "kind": "embedding", "name": f"gpu-check-{mode.replace('_', '-')}", "api_key": API_KEY, mode: True,
        "max_cuda_memory_gib": BUDGET_GIB,
        "models": [{"model": str(host.minilm), "served_name": "a"},
                   {"model": str(host.minilm), "served_name": "b", "pooling": "cls"}],
    }
    if host.cpu:
        cfg["threads"] = 2
    else:
        cfg["gpus"] = [0]
    return cfg


def run(host: Host, step: Step) -> None:
    """Each mode in turn (on a CPU host only disk_swap: offloading to CPU RAM means nothing there)."""
    modes = ["disk_swap"] if host.cpu else ["cpu_offload", "disk_swap"]
    if host.cpu:
        step.figures["cpu_offload"] = "not applicable on a CPU host (the models live in CPU RAM already)"
    for mode in modes:
        step.figures[mode] = one_mode(host, step, mode)


def one_mode(host: Host, step: Step, mode: str) -> dict[str, Any]:
    """Alternate requests to the two models through the gateway; the engine's own swap figures from /info."""
    client = host.jupyter.client()
    baseline = gpu_used()
    record = client.launch(config(host, mode))
    try:
        record = client.wait(record["id"], timeout=300)
        url = record["api_base"] + "/embeddings"
        headers = {"Authorization": f"Bearer {API_KEY}"}
        resident: dict[str, int] = {}
        with httpx.Client(timeout=120, headers=headers) as http:
            for i in range(2 * ROUNDS):
                name = "ab"[i % 2]
                http.post(url, json={"input": ["swap me"], "model": name}).raise_for_status()
                if i >= 2:  # the first round loads; later ones swap
                    resident[name] = engine_gpu(engine_pids(record["pid"]), baseline)[0]
        sock, engine_key = engine_socket(host.jupyter, record)
        transport = httpx.HTTPTransport(uds=sock)
        with httpx.Client(transport=transport, timeout=30, headers={"Authorization": f"Bearer {engine_key}"}) as engine:
            info = engine.get("http://engine/info").json()
        memory = {m["served_name"]: m["memory"] for m in info["models"]}
    finally:
        client.delete(record["id"])
    swaps = sum(m["swap_count"] for m in memory.values())
    seconds = sum(m["swap_seconds"] for m in memory.values())
    evictions = sum(m["evictions"] for m in memory.values())
    size = max(m["size_bytes"] for m in memory.values())
    figures: dict[str, Any] = {
        "swaps": swaps, "swap_in_s_mean": round(seconds / swaps, 4) if swaps else None, "evictions": evictions,
        "eviction_s_mean": round(sum(m["eviction_seconds"] for m in memory.values()) / evictions, 4) if evictions else None,
        "model_mib": round(size / 2**20, 1),
    }
    step.check(f"{mode}: the models swapped", swaps >= ROUNDS and evictions >= ROUNDS, f"{swaps} in, {evictions} out")
    if swaps:
        step.check(f"{mode}: swap back under {GOALS_S[mode]:g} s", seconds / swaps < GOALS_S[mode],
                   f"{seconds / swaps:.3f} s")
    if not host.cpu:
        figures["engine_gpu_mib"] = {k: round(v / 2**20, 1) for k, v in resident.items()}
        grown = abs(resident.get("b", 0) - resident.get("a", 0))
        step.check(f"{mode}: GPU memory given back while offloaded (one model's worth held, not two)",
                   bool(resident) and grown < size / 2, f"a {resident.get('a', 0) / 2**20:.0f} MiB, "
                   f"b {resident.get('b', 0) / 2**20:.0f} MiB, model {size / 2**20:.0f} MiB")
    return figures
