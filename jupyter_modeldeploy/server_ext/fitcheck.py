"""The fit check as the server runs it: the estimate against free memory, less what loading deployments will take.

An engine that is still loading has not reached its peak yet: what its estimate says beyond
what its process tree holds now is counted as taken. Engines already serving hold their
memory, so what is free now already leaves it out.
"""

from __future__ import annotations

from typing import Any

import psutil

from ..fit import FitReport, estimate, fit_report
from ..supervisor import Status, Supervisor


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants now (0 once it is gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


def still_to_take(supervisor: Supervisor) -> tuple[int, int]:
    """(host, GPU) bytes that deployments now loading will take beyond what they hold."""
    host = gpu = 0
    for dep in supervisor.list():
        if dep.status is not Status.LOADING:
            continue
        need = estimate(dep.config)
        pid = dep.process.pid if dep.process is not None else None
        host += max(0, need.total("host") - (tree_rss(pid) if pid else 0))
        gpu += need.total("gpu")
    return host, gpu


def fit_for(supervisor: Supervisor, config: Any) -> FitReport:
    """The fit report for launching `config` on this server now (blocking: run it off the event loop)."""
    host, gpu = still_to_take(supervisor)
    return fit_report(config, reserved_host_bytes=host, reserved_gpu_bytes=gpu)


def refusal(name: str, report: FitReport) -> str:
    """The message of a launch refused because it does not fit."""
    return (f"deployment {name!r} {report.message}; launch with force (?force=1, the CLI's --force) "
            "to start it anyway")
