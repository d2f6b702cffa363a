"""Step 1: NVML's series (utilisation, memory, temperature, power, per-process memory) under a torch matmul loop."""

from __future__ import annotations

import threading
import time

from .host import Host
from .steps import NotApplicable, Step

SECONDS = 10.0
INTERVAL_S = 0.5


def run(host: Host, step: Step) -> None:
    """Sample the metrics' GPU reader for 10 s while this process multiplies matrices on the GPU."""
    from jupyter_modeldeploy.metrics.gpu import GpuReader

    reader = GpuReader()
    try:
        if not reader.available:
            step.figures["nvml_available"] = False
            step.check("no readings without NVML", reader.read() == [] and reader.process_memory() == {})
            raise NotApplicable("no NVML here (no NVIDIA driver): the GPU series are empty, as they must be")
        import os

        import torch

        stop = threading.Event()
        loops = [0]

        def matmul() -> None:
            """Multiply on the GPU until told to stop, synchronising every 20 products."""
            a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
            while not stop.is_set():
                for _ in range(20):
                    a = (a @ a).clamp_(-1, 1)
                torch.cuda.synchronize()
                loops[0] += 20

        worker = threading.Thread(target=matmul, daemon=True)
        series: list[dict[str, float | None]] = []
        worker.start()
        started = time.monotonic()
        while time.monotonic() - started < SECONDS:
            sample = reader.read()[0]
            series.append({"t": round(time.monotonic() - started, 2), "util": sample.utilization_percent,
                           "mem_mib": sample.memory_used_bytes / 2**20, "temp_c": sample.temperature_celsius,
                           "power_w": sample.power_watts,
                           "own_mib": reader.process_memory().get(os.getpid(), 0) / 2**20})
            time.sleep(INTERVAL_S)
        stop.set()
        worker.join(30)
        torch.cuda.empty_cache()  # give the matmul's memory back before the deployments are measured
        first = reader.read()[0]
    finally:
        reader.close()
    util = [s["util"] for s in series]
    power = [s["power_w"] for s in series if s["power_w"] is not None]
    temps = [s["temp_c"] for s in series]
    own = [s["own_mib"] for s in series]
    step.figures.update({
        "gpu": first.name, "samples": len(series), "matmuls": loops[0],
        "util_percent_max": max(util), "util_percent_median": sorted(util)[len(util) // 2],
        "memory_used_mib_max": round(max(s["mem_mib"] for s in series), 1),
        "memory_total_mib": round(first.memory_total_bytes / 2**20), "temperature_c": [min(temps), max(temps)],
        "power_w": [round(min(power), 1), round(max(power), 1)] if power else None,
        "own_process_mib_max": round(max(own), 1), "series": series,
    })
    step.check("utilisation reached 50 %", max(util) >= 50, f"max {max(util):.0f} %")
    moving = [name for name in ("util", "mem_mib", "temp_c", "power_w") if len({x[name] for x in series}) > 1]
    step.check("the readings move", bool(moving), "moved: " + ", ".join(moving) if moving else "all constant")
    step.check("temperature plausible (10-100 °C)", min(temps) >= 10 and max(temps) <= 100, f"{temps[0]}..{temps[-1]}")
    step.check("power reported and above idle (> 50 W)", bool(power) and max(power) > 50,
               f"max {max(power):.0f} W" if power else "not reported")
    step.check("this process's memory seen per process (> 128 MiB)", max(own) > 128, f"{max(own):.0f} MiB")
