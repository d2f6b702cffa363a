"""The peak memory of an engine's process tree, read from the kernel (`VmHWM`, each process's peak RSS)."""

from __future__ import annotations

import psutil


def peak_rss(pid: int) -> int:
    """Bytes: the sum of the peak resident sets of every descendant of `pid` (the reaper itself left out)."""
    total = 0
    for child in psutil.Process(pid).children(recursive=True):
        try:
            with open(f"/proc/{child.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue  # it ended meanwhile
    return total
