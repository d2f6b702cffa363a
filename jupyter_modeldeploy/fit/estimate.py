"""How much memory a deployment will need, from its configuration and its model's headers.

Pure arithmetic over what `gguf.py` and `safetensors.py` read; the constants are the
runtime overheads measured on this project's machines (see docs/fit.md for how each part
is made and how it was checked against real peak memory).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import LlamaCppConfig
from ..engines import get_engine
from . import gguf, locate, safetensors

MiB = 1024 * 1024
GiB = 1024 * MiB

#: llama-server's own memory beyond model, KV cache and compute buffers (binary, threads, HTTP).
LLAMACPP_RUNTIME = 24 * MiB
#: llama.cpp's micro-batch (n_ubatch) and KV cache element size (f16).
LLAMACPP_UBATCH = 512
KV_BYTES = 2
#: A Python process with torch and sentence-transformers imported, after its first inference.
EMBEDDING_RUNTIME = 459 * MiB
#: vLLM on CPU: the API server, engine core and worker processes, before weights and KV cache.
VLLM_CPU_RUNTIME = 2056 * MiB
#: A CUDA context and its kernels, per process that uses the GPU (not measured here: no GPU).
CUDA_CONTEXT = 500 * MiB
DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}

Where = Literal["gpu", "host"]


@dataclass(frozen=True)
class Part:
    """One component of the estimate."""

    what: str
    bytes: int
    where: Where

    def to_json(self) -> dict[str, Any]:
        return {"what": self.what, "bytes": self.bytes, "where": self.where}


@dataclass
class Estimate:
    """The memory a deployment will need at its peak, part by part; `known` is False without model files."""

    parts: list[Part] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    known: bool = True

    def total(self, where: Where) -> int:
        """Bytes needed on the GPU(s) or in host RAM."""
        return sum(p.bytes for p in self.parts if p.where == where)

    def add(self, what: str, size: float, where: Where = "host") -> None:
        if size > 0:
            self.parts.append(Part(what, int(size), where))

    def to_json(self) -> dict[str, Any]:
        return {"known": self.known, "gpu_bytes": self.total("gpu"), "host_bytes": self.total("host"),
                "parts": [p.to_json() for p in self.parts], "notes": list(self.notes)}


def _unknown(note: str) -> Estimate:
    return Estimate(notes=[note], known=False)


# llama.cpp ---------------------------------------------------------------------------------

def llamacpp(config: LlamaCppConfig, *, gpu: bool) -> Estimate:
    """llama-server: the GGUF's tensors, the f16 KV cache for ctx_size, compute buffers, the runtime."""
    files = [config.model, *config.additional_models]
    paths = [locate.gguf_file(f) for f in files]
    missing = [f for f, p in zip(files, paths) if p is None]
    if missing:
        return _unknown(f"{missing[0]} is not on this server yet (not downloaded): its size is unknown")
    est = Estimate()
    if config.cli_args:
        est.notes.append("cli_args is set: the estimate uses the model's defaults, not those arguments")
    biggest: dict[str, int] = {}
    weights = 0
    for path in paths:
        assert path is not None
        arch = gguf.architecture(gguf.read_metadata(path))
        weights += path.stat().st_size
        if arch["n_layer"] * arch["n_embd"] > biggest.get("n_layer", 0) * biggest.get("n_embd", 0):
            biggest = arch
    if len(paths) > 1:
        est.notes.append(f"{len(paths)} models: every model's weights counted, the KV cache of the largest")
    arch = biggest
    n_ctx = config.ctx_size or arch["n_ctx_train"] or 4096
    n_ctx = int(math.ceil(n_ctx / 256) * 256)  # llama.cpp pads the context to 256 cells
    kv = arch["n_layer"] * n_ctx * arch["n_head_kv"] * (arch["key_length"] + arch["value_length"]) * KV_BYTES
    slots = max(1, int(config.parallel or 1))
    compute = LLAMACPP_UBATCH * 4 * (2 * arch["n_ff"] + 6 * arch["n_embd"]) + arch["n_vocab"] * 4 * slots
    layers = arch["n_layer"] + 1  # the output layer counts as one
    offload = min(max(int(config.n_gpu_layers or 0), 0), layers) / layers if gpu else 0.0
    est.add("weights (GGUF tensors)", weights * (1 - offload))
    est.add("weights on the GPU", weights * offload, "gpu")
    est.add(f"KV cache ({n_ctx} tokens, f16)", kv * (1 - offload))
    est.add(f"KV cache on the GPU ({n_ctx} tokens, f16)", kv * offload, "gpu")
    est.add("compute buffers", compute, "gpu" if offload else "host")
    est.add("llama-server runtime", LLAMACPP_RUNTIME)
    if offload:
        est.add("CUDA context", CUDA_CONTEXT, "gpu")
    return est


# Hugging Face folders (vLLM, sentence-transformers) ----------------------------------------

def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _weights(folder: Path) -> safetensors.Weights:
    found = safetensors.read_folder(folder)
    if found.parameters:
        return found
    stored = sum(p.stat().st_size for p in folder.glob("*.bin"))  # no safetensors: pytorch_model.bin
    return safetensors.Weights(stored // 4, stored)


def _dtype_bytes(dtype: str | None, weights: safetensors.Weights, model_config: dict[str, Any]) -> int:
    if dtype and dtype in DTYPE_BYTES:
        return DTYPE_BYTES[dtype]
    declared = str(model_config.get("torch_dtype") or model_config.get("dtype") or "")
    if declared in DTYPE_BYTES:
        return DTYPE_BYTES[declared]
    return max(1, round(weights.stored_bytes / weights.parameters)) if weights.parameters else 4


def embedding(config: Any, *, gpu: bool) -> Estimate:
    """sentence-transformers: each model's weights (plus the stored copy while converting), the
    activations of its largest batch (attention scores and probabilities, feed-forward), the runtime."""
    est = Estimate()
    where: Where = "gpu" if gpu else "host"
    for entry in config.models:
        folder = locate.model_folder(entry.model, entry.revision)
        if folder is None:
            return _unknown(f"{entry.model} is not on this server yet (not downloaded): its size is unknown")
        name = entry.served_name or Path(entry.model).name
        model_config = _json(folder / "config.json")
        weights = _weights(folder)
        size = _dtype_bytes(entry.dtype, weights, model_config)
        est.add(f"{name}: weights ({entry.dtype})", weights.parameters * size, where)
        if abs(weights.stored_bytes - weights.parameters * size) > 0.05 * weights.stored_bytes:
            est.add(f"{name}: stored weights while converting", weights.stored_bytes)
        seq = int(_json(folder / "sentence_bert_config.json").get("max_seq_length")
                  or model_config.get("max_position_embeddings") or 512)
        tokens = min(entry.max_batch_tokens, entry.max_batch_requests * seq)
        sequences = max(1, tokens // seq)
        heads = int(model_config.get("num_attention_heads") or 12)
        ff = int(model_config.get("intermediate_size") or 4 * int(model_config.get("hidden_size") or 768))
        attention = sequences * heads * seq * seq * 4 * 2  # scores and probabilities, float32
        est.add(f"{name}: activations ({tokens} tokens in one batch)", attention + tokens * ff * 4, where)
    est.add("Python, torch and sentence-transformers", EMBEDDING_RUNTIME)
    if gpu:
        est.add("CUDA context", CUDA_CONTEXT, "gpu")
    return est


def llm(config: Any, *, gpu: bool, gpu_total_bytes: int = 0, cpu_kv_gib: int = 1) -> Estimate:
    """vLLM: on CPU its weights, the KV cache space it is given (VLLM_CPU_KVCACHE_SPACE) and its
    processes; on a GPU the share of GPU memory it claims (gpu_memory_utilization)."""
    folder = locate.model_folder(config.model, config.revision)
    if folder is None:
        return _unknown(f"{config.model} is not on this server yet (not downloaded): its size is unknown")
    model_config = _json(folder / "config.json")
    weights = _weights(folder)
    size = _dtype_bytes(None if config.dtype == "auto" else config.dtype, weights, model_config)
    est = Estimate()
    if gpu:
        claimed = gpu_total_bytes * config.gpu_memory_utilization
        est.add(f"GPU memory vLLM claims (gpu_memory_utilization={config.gpu_memory_utilization:g}): "
                "weights, KV cache, activations", max(claimed, weights.parameters * size), "gpu")
        est.add("vLLM processes", VLLM_CPU_RUNTIME)
        return est
    est.add(f"weights ({weights.parameters / 1e6:.0f} M parameters)", weights.parameters * size)
    est.add(f"KV cache space ({cpu_kv_gib} GiB, VLLM_CPU_KVCACHE_SPACE)", cpu_kv_gib * GiB)
    est.add("vLLM processes (API server, engine core, worker)", VLLM_CPU_RUNTIME)
    return est


# Any other kind: its engine's own answer ---------------------------------------------------

def from_engine(config: Any, *, gpu: bool, gpu_total_bytes: int) -> Estimate:
    """A kind without a reader here: what its engine says it takes (`Engine.fit_inputs`; unknown by default)."""
    answer = get_engine(config.kind).fit_inputs(config, gpu=gpu, gpu_total_bytes=gpu_total_bytes)
    est = Estimate(notes=list(answer.notes), known=answer.known)
    for need in answer.parts:
        est.add(need.what, need.bytes, need.where)
    return est


def estimate(config: Any, *, gpu: bool = False, gpu_total_bytes: int = 0) -> Estimate:
    """The estimate for any kind (the built-in kinds from their model files' headers, any other from its
    engine); an unreadable model file gives an unknown estimate saying why."""
    try:
        if isinstance(config, LlamaCppConfig):
            return llamacpp(config, gpu=gpu)
        if config.kind == "embedding":
            return embedding(config, gpu=gpu)
        if config.kind == "llm":
            from ..engines.llm import cpu_kv_cache_gib

            return llm(config, gpu=gpu, gpu_total_bytes=gpu_total_bytes, cpu_kv_gib=cpu_kv_cache_gib(config))
        return from_engine(config, gpu=gpu, gpu_total_bytes=gpu_total_bytes)
    except (OSError, gguf.NotGGUF, safetensors.NotSafetensors) as exc:
        return _unknown(f"the model's files cannot be read for an estimate: {exc}")
