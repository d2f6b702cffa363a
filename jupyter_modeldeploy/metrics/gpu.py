"""GPU readings through NVML (nvidia-ml-py); cleanly absent where there is no NVIDIA GPU."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuSample:
    """One GPU's readings at one moment."""

    index: int
    name: str
    utilization_percent: float
    memory_used_bytes: float
    memory_total_bytes: float
    temperature_celsius: float
    power_watts: float | None = None  # None where the board does not report it


class GpuReader:
    """Reads every GPU; `available` is False (and `read()` returns []) without NVML or a GPU."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._names: list[str] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._names = [self._name(pynvml, h) for h in self._handles]
            self._nvml = pynvml
        except Exception as exc:  # no driver, no library, no device: all mean "no GPU"
            log.debug("NVML not available: %s", exc)
            self._nvml = None
            self._handles = []

    @staticmethod
    def _name(pynvml: Any, handle: Any) -> str:
        name = pynvml.nvmlDeviceGetName(handle)
        return name.decode() if isinstance(name, bytes) else str(name)

    @property
    def available(self) -> bool:
        return self._nvml is not None and bool(self._handles)

    def read(self) -> list[GpuSample]:
        """Current readings of every GPU (empty without GPUs)."""
        if not self.available:
            return []
        nvml = self._nvml
        samples = []
        for index, handle in enumerate(self._handles):
            try:
                util = nvml.nvmlDeviceGetUtilizationRates(handle)
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                temp = nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
            except Exception as exc:  # a GPU that fell off the bus must not stop the sampler
                log.warning("NVML read of GPU %d failed: %s", index, exc)
                continue
            samples.append(
                GpuSample(
                    index=index, name=self._names[index], utilization_percent=float(util.gpu),
                    memory_used_bytes=float(mem.used), memory_total_bytes=float(mem.total),
                    temperature_celsius=float(temp), power_watts=self._power(handle),
                )
            )
        return samples

    def _power(self, handle: Any) -> float | None:
        try:
            return float(self._nvml.nvmlDeviceGetPowerUsage(handle)) / 1000.0  # milliwatts
        except Exception:  # not supported on every board
            return None

    def process_memory(self) -> dict[int, int]:
        """GPU memory per process id, summed over every GPU (compute and graphics contexts); {} without GPUs."""
        if not self.available:
            return {}
        nvml = self._nvml
        used: dict[int, int] = {}
        for handle in self._handles:
            for query in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
                try:
                    processes = getattr(nvml, query)(handle)
                except Exception:  # older drivers lack one or the other
                    continue
                for proc in processes:
                    if proc.usedGpuMemory is not None:
                        used[int(proc.pid)] = used.get(int(proc.pid), 0) + int(proc.usedGpuMemory)
        return used

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None
