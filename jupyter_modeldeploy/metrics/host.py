"""Host readings through psutil: CPU, memory, network and disk throughput."""

from __future__ import annotations

import time

import psutil


class HostSampler:
    """Turns psutil's counters into rates between two calls of `sample()`."""

    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)  # the first call only primes the counter
        self._last_time = time.monotonic()
        self._net = psutil.net_io_counters()
        self._disk = psutil.disk_io_counters()

    def sample(self) -> dict[str, float | None]:
        now = time.monotonic()
        elapsed = max(now - self._last_time, 1e-6)
        net = psutil.net_io_counters()
        disk = psutil.disk_io_counters()
        memory = psutil.virtual_memory()
        values: dict[str, float | None] = {
            "cpu_percent": psutil.cpu_percent(interval=None),
            "memory_used_bytes": float(memory.total - memory.available),
            "memory_percent": memory.percent,
            "net_rx_bytes_per_s": (net.bytes_recv - self._net.bytes_recv) / elapsed if net and self._net else None,
            "net_tx_bytes_per_s": (net.bytes_sent - self._net.bytes_sent) / elapsed if net and self._net else None,
            "disk_read_bytes_per_s": (disk.read_bytes - self._disk.read_bytes) / elapsed if disk and self._disk else None,
            "disk_write_bytes_per_s": (disk.write_bytes - self._disk.write_bytes) / elapsed
            if disk and self._disk else None,
        }
        self._last_time, self._net, self._disk = now, net, disk
        return values


def process_tree_usage(pid: int, cache: dict[int, psutil.Process]) -> tuple[float, float] | None:
    """CPU percent and RSS bytes of a process and its descendants (None if it is gone).

    `cache` keeps psutil.Process objects between calls, which cpu_percent needs to measure.
    """
    try:
        root = cache.get(pid) or psutil.Process(pid)
        cache[pid] = root
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    cpu = 0.0
    rss = 0.0
    for proc in members:
        proc = cache.setdefault(proc.pid, proc)
        try:
            cpu += proc.cpu_percent(interval=None)
            rss += proc.memory_info().rss
        except psutil.Error:
            continue
    return cpu, rss
