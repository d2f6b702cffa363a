"""NVML readings: cleanly absent without a GPU; read through nvidia-ml-py's API where present."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from jupyter_modeldeploy.metrics.gpu import GpuReader


@pytest.mark.skipif(Path("/proc/driver/nvidia/version").exists(), reason="this host has an NVIDIA driver")
def test_no_gpu_means_no_readings_and_no_error() -> None:
    reader = GpuReader()
    assert reader.available is False
    assert reader.read() == []
    reader.close()


def fake_nvml(fail_temperature: bool = False) -> types.ModuleType:
    """A stand-in for pynvml with two GPUs (a unit-test double: the real one needs a driver)."""
    nvml = types.ModuleType("pynvml")
    nvml.NVML_TEMPERATURE_GPU = 0
    nvml.nvmlInit = lambda: None
    nvml.nvmlShutdown = lambda: None
    nvml.nvmlDeviceGetCount = lambda: 2
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i
    nvml.nvmlDeviceGetName = lambda h: b"NVIDIA H100" if h == 0 else "NVIDIA L4"
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=40 + h, memory=10)
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=(h + 1) << 30, total=80 << 30, free=0)

    def temperature(h: int, sensor: int) -> int:
        if fail_temperature and h == 1:
            raise RuntimeError("GPU is lost")
        return 50 + h

    nvml.nvmlDeviceGetTemperature = temperature
    return nvml


def test_readings_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml())
    reader = GpuReader()
    assert reader.available
    samples = reader.read()
    assert [(s.index, s.name, s.utilization_percent, s.memory_used_bytes, s.temperature_celsius) for s in samples] == [
        (0, "NVIDIA H100", 40.0, float(1 << 30), 50.0),
        (1, "NVIDIA L4", 41.0, float(2 << 30), 51.0),
    ]


def test_a_failing_gpu_is_skipped_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(fail_temperature=True))
    assert [s.index for s in GpuReader().read()] == [0]


def test_init_failure_means_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = fake_nvml()

    def fail() -> None:
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    broken.nvmlInit = fail
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    assert GpuReader().read() == []


def test_power_and_memory_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_nvml()
    nvml.nvmlDeviceGetPowerUsage = lambda h: 312_500 if h == 0 else (_ for _ in ()).throw(RuntimeError("not supported"))
    proc = types.SimpleNamespace
    nvml.nvmlDeviceGetComputeRunningProcesses = lambda h: [proc(pid=7, usedGpuMemory=1 << 30)] + (
        [proc(pid=9, usedGpuMemory=None)] if h else [])
    nvml.nvmlDeviceGetGraphicsRunningProcesses = lambda h: [proc(pid=7, usedGpuMemory=1 << 20)] if h else []
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    reader = GpuReader()
    assert [s.power_watts for s in reader.read()] == [312.5, None]
    assert reader.process_memory() == {7: (2 << 30) + (1 << 20)}


@pytest.mark.skipif(Path("/proc/driver/nvidia/version").exists(), reason="this host has an NVIDIA driver")
def test_no_gpu_means_no_processes() -> None:
    assert GpuReader().process_memory() == {}
