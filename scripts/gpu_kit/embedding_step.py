"""Step 2: an embedding deployment of MiniLM on the GPU through the gateway: vectors, throughput, fit."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .host import API_KEY, Host, engine_gpu, engine_pids, gpu_used
from .load import corpus, embed_throughput
from .steps import Step, within

TEXTS = ["The cat sits on the mat.", "Quantum computers use qubits.", "Jupyter serves models.",
         "A gateway admits each request once."]


def config(host: Host) -> dict[str, Any]:
    """The deployment: one MiniLM, on GPU 0 where there is one."""
    cfg: dict[str, Any] = {"kind": "embedding", "name": "gpu-check-emb", "api_key": API_KEY,
                           "models": [{"model": str(host.minilm), "served_name": "minilm", "max_batch_tokens": 8192}]}
    if host.cpu:
        cfg["threads"] = 2
    else:
        cfg["gpus"] = [0]
    return cfg


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(-1)


def run(host: Host, step: Step) -> None:
    """Launch, compare vectors with the CPU's, compare the fit estimate with the peak, load it with 16 clients."""
    import httpx
    from sentence_transformers import SentenceTransformer

    from jupyter_modeldeploy.config import parse_config
    from jupyter_modeldeploy.fit import estimate
    from tests.support.peak_memory import peak_rss

    client = host.jupyter.client()
    cfg = config(host)
    baseline = gpu_used()
    started, launched_at = time.monotonic(), time.time()
    record = client.launch(cfg)
    try:
        record = client.wait(record["id"], timeout=300)
        step.figures["ready_s"] = round(time.monotonic() - started, 1)
        url = record["api_base"] + "/embeddings"
        answer = httpx.post(url, json={"input": TEXTS, "model": "minilm"}, timeout=120,
                            headers={"Authorization": f"Bearer {API_KEY}"})
        answer.raise_for_status()
        served = np.array([d["embedding"] for d in answer.json()["data"]])
        cpu_model = SentenceTransformer(str(host.minilm), device="cpu")
        similarity = cosine(served, cpu_model.encode(TEXTS))
        step.figures["cosine_min_vs_cpu"] = round(float(similarity.min()), 6)
        step.check("vectors equal to the CPU's (cosine >= 0.999)", similarity.min() >= 0.999, f"{similarity.min():.6f}")

        # The largest batch the limits allow (as tests/integration/test_fit_measured.py sends it): 32 inputs
        # past MiniLM's 256-token limit, 8192 tokens in one batch; the peak is measured after it and before the
        # 16-client load, whose concurrent requests (each with its own buffers) the estimate of one batch leaves out.
        httpx.post(url, json={"input": [f"word{i} " * 200 for i in range(32)], "model": "minilm"}, timeout=300,
                   headers={"Authorization": f"Bearer {API_KEY}"}).raise_for_status()
        on_gpu = not host.cpu
        est = estimate(parse_config(cfg), gpu=on_gpu)
        if on_gpu:
            measured, where = engine_gpu(engine_pids(record["pid"]), baseline)
        else:
            measured, where = peak_rss(record["pid"]), "host RAM: peak RSS of the engine's processes"
        guess = est.total("gpu" if on_gpu else "host")
        step.figures["fit"] = {"where": where, "estimate_mib": round(guess / 2**20, 1),
                               "measured_mib": round(measured / 2**20, 1),
                               "estimate_over_measured": round(guess / measured, 3) if measured else None,
                               "parts": est.to_json()["parts"]}
        step.check("fit estimate within ±15 % of the measured peak", within(measured, guess, 0.15),
                   f"{guess / 2**20:.0f} MiB estimated, {measured / 2**20:.0f} MiB measured")

        texts = corpus(640 if not host.cpu else 48)
        gateway = embed_throughput(url, API_KEY, texts, clients=16)
        local = SentenceTransformer(str(host.minilm), device=host.device)
        local.encode(texts[:32])  # warm-up
        begun = time.perf_counter()
        local.encode(texts, batch_size=64)
        in_process = len(texts) / (time.perf_counter() - begun)
        step.figures.update({"gateway_16_clients": gateway, "in_process_encode_sentences_per_s": round(in_process, 1),
                             "gateway_vs_in_process": round(gateway["sentences_per_s"] / in_process, 3)})
        del local
        if not host.cpu:
            import torch

            torch.cuda.empty_cache()  # this process's cache is not the engine's, but keep the device's count clean

        sampler_series(client.host_metrics(since=launched_at), host, step)
    finally:
        client.delete(record["id"])


def sampler_series(data: dict[str, Any], host: Host, step: Step) -> None:
    """The host sampler's GPU series as the REST API serves them to the charts, since the launch."""
    gpus = data.get("gpus", [])
    summary = []
    for gpu in gpus:
        series = gpu["series"]

        def top(name: str, series: dict[str, Any] = series) -> float | None:
            """The largest value of one series (None when it has none)."""
            values = [v for v in series.get(name, []) if v is not None]
            return max(values) if values else None

        used = [v for v in series.get("memory_used_bytes", []) if v is not None]
        summary.append({"index": gpu["index"], "name": gpu["name"], "samples": len(gpu["t"]),
                        "utilization_percent_max": top("utilization_percent"), "power_watts_max": top("power_watts"),
                        "temperature_celsius_max": top("temperature_celsius"),
                        "memory_used_mib": [round(min(used) / 2**20), round(max(used) / 2**20)] if used else None})
    step.figures["host_sampler_gpus"] = {"gpu_available": data.get("gpu_available"), "gpus": summary}
    if host.cpu:
        step.check("the host sampler has no GPU series without a GPU", not gpus and data.get("gpu_available") is False)
        return
    first = summary[0] if summary else {}
    step.check("the host sampler serves GPU series over REST (utilisation, memory, temperature, power)",
               bool(first) and first["samples"] >= 2 and first["power_watts_max"] is not None
               and first["utilization_percent_max"] is not None, str(first))
    step.check("its GPU memory series moved while the engine loaded", bool(first.get("memory_used_mib"))
               and first["memory_used_mib"][1] > first["memory_used_mib"][0], str(first.get("memory_used_mib")))
