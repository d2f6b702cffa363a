"""The GPU check's NVML step, its GPU branch run here with doubles (NVML with one H100, torch's matmul on the
CPU and small), so the code a lent machine runs once has run before."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from scripts.gpu_kit import nvml_step
from scripts.gpu_kit.host import Host
from scripts.gpu_kit.steps import FAILED, NOT_APPLICABLE, OK, run_step
from tests.unit.test_gpu_metrics import fake_nvml


def busy_nvml() -> types.ModuleType:
    """One GPU whose readings climb with each read, this process holding 512 MiB on it."""
    nvml = fake_nvml()
    nvml.nvmlDeviceGetCount = lambda: 1
    reads = iter(range(10**6))
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=min(100, 10 * next(reads)), memory=0)
    nvml.nvmlDeviceGetPowerUsage = lambda h: 350_000
    proc = types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=512 << 20)
    nvml.nvmlDeviceGetComputeRunningProcesses = lambda h: [proc]
    nvml.nvmlDeviceGetGraphicsRunningProcesses = lambda h: []
    return nvml


def test_the_gpu_branch_samples_while_torch_multiplies(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    monkeypatch.setitem(sys.modules, "pynvml", busy_nvml())
    monkeypatch.setattr(nvml_step, "SECONDS", 1.0)
    monkeypatch.setattr(nvml_step, "INTERVAL_S", 0.1)
    real_randn = torch.randn
    monkeypatch.setattr(torch, "randn", lambda *shape, device=None, dtype=None: real_randn(64, 64))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    host = Host(cpu=False, bundle=tmp_path, out=tmp_path, work=tmp_path)
    step = run_step("1", "nvml", lambda s: nvml_step.run(host, s), log=lambda _: None)
    assert step.status == OK, (step.error, step.checks)
    assert step.figures["gpu"] == "NVIDIA H100" and step.figures["samples"] >= 5 and step.figures["matmuls"] > 0
    assert step.figures["power_w"] == [350.0, 350.0] and step.figures["own_process_mib_max"] == 512.0
    assert step.figures["util_percent_max"] >= 50 and len(step.figures["series"]) == step.figures["samples"]


def test_an_idle_gpu_fails_the_step(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    nvml = busy_nvml()
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=0, memory=0)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(nvml_step, "SECONDS", 0.3)
    monkeypatch.setattr(nvml_step, "INTERVAL_S", 0.1)
    real_randn = torch.randn
    monkeypatch.setattr(torch, "randn", lambda *shape, device=None, dtype=None: real_randn(8, 8))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    host = Host(cpu=False, bundle=tmp_path, out=tmp_path, work=tmp_path)
    step = run_step("1", "nvml", lambda s: nvml_step.run(host, s), log=lambda _: None)
    assert step.status == FAILED and "utilisation reached 50 %" in (step.error or "")


@pytest.mark.skipif(Path("/proc/driver/nvidia/version").exists(), reason="this host has an NVIDIA driver")
def test_without_nvml_it_is_not_applicable(tmp_path: Path) -> None:
    host = Host(cpu=True, bundle=tmp_path, out=tmp_path, work=tmp_path)
    step = run_step("1", "nvml", lambda s: nvml_step.run(host, s), log=lambda _: None)
    assert step.status == NOT_APPLICABLE and step.checks == [{"check": "no readings without NVML", "passed": True,
                                                                "detail": ""}]
