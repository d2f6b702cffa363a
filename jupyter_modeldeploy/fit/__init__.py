"""The fit check: the memory a deployment will need, from its model's own files, against what is free.

`estimate(config)` reads headers only (GGUF metadata, safetensors indexes, config.json);
`check(estimate, free)` compares; `free_now()` asks psutil and NVML. See docs/fit.md.
"""

from __future__ import annotations

from typing import Any

from .check import FitReport, Free, check
from .estimate import Estimate, Part, estimate
from .free import free_now

__all__ = ["Estimate", "FitReport", "Free", "Part", "check", "estimate", "fit_report", "free_now"]


def fit_report(config: Any, *, reserved_host_bytes: int = 0, reserved_gpu_bytes: int = 0) -> FitReport:
    """Estimate `config` and check it against memory free now (GPUs: those the config may use)."""
    if config.placement.on_ray:
        unchecked = Estimate(notes=["it runs on a Ray cluster: its nodes' memory is not checked here"], known=False)
        return check(unchecked, Free(host_bytes=0))
    gpus = config.gpus if isinstance(config.gpus, list) else None
    free = free_now(reserved_host_bytes=reserved_host_bytes, reserved_gpu_bytes=reserved_gpu_bytes, gpus=gpus)
    on_gpu = bool(free.gpu_bytes)
    return check(estimate(config, gpu=on_gpu, gpu_total_bytes=sum(free.gpu_total_bytes)), free)
