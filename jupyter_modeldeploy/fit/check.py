"""Does an estimate fit in what is free now? A pure comparison, and the message that gives the numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..formats import format_bytes as mib
from .estimate import Estimate


@dataclass(frozen=True)
class Free:
    """Memory free now: host RAM available, each GPU's free bytes, less what loading deployments will still take."""

    host_bytes: int
    gpu_bytes: list[int] = field(default_factory=list)  # per visible GPU
    gpu_total_bytes: list[int] = field(default_factory=list)
    reserved_host_bytes: int = 0  # other deployments still loading: what they will take beyond what they hold now
    reserved_gpu_bytes: int = 0

    @property
    def usable_host(self) -> int:
        return max(0, self.host_bytes - self.reserved_host_bytes)

    @property
    def usable_gpu(self) -> int:
        return max(0, sum(self.gpu_bytes) - self.reserved_gpu_bytes)


@dataclass(frozen=True)
class FitReport:
    """The estimate against free memory: whether it fits, and a message with the numbers."""

    estimate: Estimate
    free: Free
    fits: bool | None  # None: unknown (no model files to read)
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "fits": self.fits, "message": self.message, "estimate": self.estimate.to_json(),
            "free": {"host_bytes": self.free.host_bytes, "gpu_bytes": self.free.gpu_bytes,
                     "reserved_host_bytes": self.free.reserved_host_bytes,
                     "reserved_gpu_bytes": self.free.reserved_gpu_bytes},
        }


def check(estimate: Estimate, free: Free) -> FitReport:
    """Compare the estimate with free memory, on the host and on the GPUs."""
    if not estimate.known:
        return FitReport(estimate, free, None, "; ".join(estimate.notes) or "no estimate")
    host, gpu = estimate.total("host"), estimate.total("gpu")
    short = []
    if host > free.usable_host:
        short.append(f"host RAM: needs {mib(host)}, {mib(free.usable_host)} free")
    if gpu and gpu > free.usable_gpu:
        short.append(f"GPU memory: needs {mib(gpu)}, {mib(free.usable_gpu)} free")
    reserved = free.reserved_host_bytes + free.reserved_gpu_bytes
    held = f" (after {mib(reserved)} that loading deployments will still take)" if reserved else ""
    if short:
        return FitReport(estimate, free, False, "does not fit: " + "; ".join(short) + held)
    need = f"needs {mib(host)} of host RAM ({mib(free.usable_host)} free)"
    if gpu:
        need += f" and {mib(gpu)} of GPU memory ({mib(free.usable_gpu)} free)"
    return FitReport(estimate, free, True, "fits: " + need + held)
