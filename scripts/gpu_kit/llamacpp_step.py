"""Step 4: llama.cpp with CUDA: llama-server built from the bundle's trimmed tree for this card only, then a
llamacpp deployment of SmolLM2 with every layer on the GPU: fit against NVML, tokens/s, `gpus` honoured."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bench.common import engine_socket

from .host import API_KEY, Host, engine_gpu, engine_pids, gpu_used, process_env
from .load import completion_throughput
from .steps import NotApplicable, Step, within


def build(host: Host, step: Step) -> None:
    """4a: build llama-server for the device's architecture (all cores); --cpu: the cached CPU build instead."""
    from jupyter_modeldeploy.engines import llamacpp_install as inst
    from jupyter_modeldeploy.engines.llamacpp_source import extract

    from .bundle import LLAMA_ARCHIVE

    if host.cpu:
        found = inst.find_llama_server()
        if found is None:
            raise RuntimeError("no llama-server built here: run `make engine-llamacpp`")
        host.llama_server = found
        step.figures["llama_server"] = "the cached CPU build (no build on a CPU host)"
        raise NotApplicable("a CUDA build needs a GPU host: the cached CPU llama-server serves step 4b")
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    arch = f"{major}{minor}"
    tree = extract(host.bundle / LLAMA_ARCHIVE, host.work / "llama-src")
    plan = inst.plan_build(backend="cuda", cuda_architectures=arch)
    log_lines: list[str] = []
    started = time.monotonic()
    host.llama_server = inst.build_llama_server(plan, force=True, source=tree, jobs=os.cpu_count(),
                                                log=log_lines.append)
    step.figures.update({"cuda_architectures": arch, "build_s": round(time.monotonic() - started, 1),
                         "jobs": os.cpu_count(), "binary": str(host.llama_server), "cache_key": plan.key})


def config(host: Host) -> dict[str, Any]:
    """SmolLM2 with every layer on GPU 0 (no layers anywhere on a CPU host), 4 slots."""
    return {"kind": "llamacpp", "name": "gpu-check-llama", "model": str(host.smollm2), "api_key": API_KEY,
            "ctx_size": 2048, "parallel": 4, "n_gpu_layers": 9999, "gpus": [0],
            **({"threads": 2} if host.cpu else {})}


def serve(host: Host, step: Step) -> None:
    """4b: deploy, compare the fit estimate with the engine's memory, tokens/s through the gateway and direct."""
    from jupyter_modeldeploy.config import parse_config
    from jupyter_modeldeploy.fit import estimate
    from tests.support.peak_memory import peak_rss

    if host.llama_server is None:
        raise RuntimeError("no llama-server: step 4a did not give one")
    client = host.jupyter.client()
    cfg = config(host)
    baseline = gpu_used()
    record = client.launch(cfg)
    try:
        record = client.wait(record["id"], timeout=300)
        pids = engine_pids(record["pid"])
        server_pids = [p for p in pids if Path(f"/proc/{p}/exe").exists() and os.readlink(f"/proc/{p}/exe").endswith(
            "llama-server")] or pids
        seen = process_env(server_pids[0], "CUDA_VISIBLE_DEVICES")
        step.figures["cuda_visible_devices_seen_by_engine"] = seen
        step.check("`gpus: [0]` reaches the engine as CUDA_VISIBLE_DEVICES=0", seen == "0", repr(seen))
        tokens, rounds = (128, 4) if not host.cpu else (8, 1)
        sock, engine_key = engine_socket(host.jupyter, record)
        speeds: dict[str, Any] = {}
        for clients in (1, 4):
            speeds[f"{clients}_clients"] = {
                "gateway": completion_throughput(record["api_base"] + "/completions", API_KEY, clients, rounds, tokens),
                "own_socket": completion_throughput("http://engine/v1/completions", engine_key, clients, rounds, tokens,
                                                    uds=sock),
            }
            pair = speeds[f"{clients}_clients"]
            pair["gateway_over_direct"] = round(pair["gateway"]["tokens_per_s"] / pair["own_socket"]["tokens_per_s"], 3)
        step.figures["tokens_per_s"] = speeds
        on_gpu = not host.cpu
        est = estimate(parse_config(cfg), gpu=on_gpu)
        if on_gpu:
            measured, where = engine_gpu(pids, baseline)
        else:
            measured, where = peak_rss(record["pid"]), "host RAM: peak RSS of llama-server"
        guess = est.total("gpu" if on_gpu else "host")
        step.figures["fit"] = {
            "where": where,
            "estimate_mib": round(guess / 2**20, 1), "measured_mib": round(measured / 2**20, 1),
            "estimate_over_measured": round(guess / measured, 3) if measured else None,
            "parts": est.to_json()["parts"]}
        step.check("fit estimate within ±15 % of the measured memory", within(measured, guess, 0.15),
                   f"{guess / 2**20:.0f} MiB estimated, {measured / 2**20:.0f} MiB measured")
        if on_gpu:  # two shared cores give no such promise
            step.check("4 clients give more tokens/s than 1 through the gateway",
                       speeds["4_clients"]["gateway"]["tokens_per_s"] > speeds["1_clients"]["gateway"]["tokens_per_s"])
    finally:
        client.delete(record["id"])
