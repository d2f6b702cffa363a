"""What memory is free now: host RAM from psutil, GPU memory from NVML (none without a GPU)."""

from __future__ import annotations

import psutil

from ..metrics.gpu import GpuReader
from .check import Free


def free_now(*, reserved_host_bytes: int = 0, reserved_gpu_bytes: int = 0, gpus: list[int] | None = None) -> Free:
    """Free memory this moment; `gpus` picks GPU indices (None: all visible)."""
    reader = GpuReader()
    try:
        samples = [s for s in reader.read() if gpus is None or s.index in gpus]
    finally:
        reader.close()
    return Free(
        host_bytes=int(psutil.virtual_memory().available),
        gpu_bytes=[int(s.memory_total_bytes - s.memory_used_bytes) for s in samples],
        gpu_total_bytes=[int(s.memory_total_bytes) for s in samples],
        reserved_host_bytes=reserved_host_bytes,
        reserved_gpu_bytes=reserved_gpu_bytes,
    )
