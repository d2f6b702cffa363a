"""What the built-in engines' fit inputs (`Engine.fit_inputs`, docs/fit.md) share: byte units, a CUDA context,
the answer for a model not on this server yet, and a Hugging Face model folder's weights and dtype as its
headers say (`safetensors.py`, `config.json`).

Each engine's own arithmetic and measured constants stay in its module (`llamacpp.py`, `llm.py`,
`embedding.py`); the fit check (`fit/estimate.py`) only asks the engine and compares.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from . import safetensors
from .base import FitInputs, MemoryNeed

MiB = 1024 * 1024
GiB = 1024 * MiB

#: A CUDA context and its kernels, per process that uses the GPU (not measured here: no GPU).
CUDA_CONTEXT = 500 * MiB
DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}

Where = Literal["gpu", "host"]


class Needs:
    """Fit inputs built part by part; a part of no bytes is left out."""

    def __init__(self) -> None:
        self.parts: list[MemoryNeed] = []
        self.notes: list[str] = []

    def add(self, what: str, size: float, where: Where = "host") -> None:
        """One part of the memory at the peak, in bytes, on the GPU(s) or in host RAM."""
        if size > 0:
            self.parts.append(MemoryNeed(what, int(size), where))

    def inputs(self) -> FitInputs:
        """The engine's answer to the fit check."""
        return FitInputs(parts=tuple(self.parts), notes=tuple(self.notes))


def not_here(model: str) -> FitInputs:
    """Unknown: the model is not on this server yet (a reference is looked up in the local cache only)."""
    return FitInputs(notes=(f"{model} is not on this server yet (not downloaded): its size is unknown",), known=False)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of a model folder (`config.json` and the like); empty when absent or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def folder_weights(folder: Path) -> safetensors.Weights:
    """A model folder's parameter count and stored bytes: from its safetensors headers, else from the size of its
    `*.bin` files (pytorch_model.bin, taken as float32)."""
    found = safetensors.read_folder(folder)
    if found.parameters:
        return found
    stored = sum(p.stat().st_size for p in folder.glob("*.bin"))
    return safetensors.Weights(stored // 4, stored)


def dtype_bytes(dtype: str | None, weights: safetensors.Weights, model_config: dict[str, Any]) -> int:
    """Bytes per parameter once loaded: the dtype asked for, else the one `config.json` declares, else as stored."""
    if dtype and dtype in DTYPE_BYTES:
        return DTYPE_BYTES[dtype]
    declared = str(model_config.get("torch_dtype") or model_config.get("dtype") or "")
    if declared in DTYPE_BYTES:
        return DTYPE_BYTES[declared]
    return max(1, round(weights.stored_bytes / weights.parameters)) if weights.parameters else 4
