"""The llama-server build plan: backend choice, portable flags, cache key and location."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_modeldeploy.engines import llamacpp_install as inst


def test_portable_build_without_native_flags() -> None:
    plan = inst.plan_build(backend="cpu")
    assert "-DGGML_NATIVE=OFF" in plan.cmake_flags and "-DGGML_AVX2=ON" in plan.cmake_flags
    assert "-DLLAMA_USE_PREBUILT_UI=OFF" in plan.cmake_flags, "the build must not download its web UI"
    assert "-DGGML_CUDA=ON" not in plan.cmake_flags


def test_cuda_only_with_nvcc_and_a_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inst.shutil, "which", lambda tool: "/x/nvcc" if tool == "nvcc" else None)
    monkeypatch.setattr(inst.Path, "exists", lambda self: False)
    assert inst.plan_build().backend == "cpu", "nvcc alone (no driver) must not give a CUDA build"
    monkeypatch.setattr(inst.shutil, "which", lambda tool: f"/x/{tool}")
    plan = inst.plan_build()
    assert plan.backend == "cuda" and "-DGGML_CUDA=ON" in plan.cmake_flags


def test_cache_key_changes_with_flags_and_lives_in_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JUPYTER_MODELDEPLOY_CACHE", str(tmp_path))
    cpu, cuda = inst.plan_build(backend="cpu"), inst.plan_build(backend="cuda")
    assert cpu.key != cuda.key and cpu.key.startswith(inst.LLAMA_CPP_PYTHON_VERSION)
    assert cpu.server_binary == tmp_path / "llama.cpp" / cpu.key / "bin" / "llama-server"
    assert inst.find_llama_server() is None
    cpu.server_binary.parent.mkdir(parents=True)
    cpu.server_binary.write_text("#!/bin/sh\n")
    cpu.server_binary.chmod(0o755)
    assert inst.find_llama_server() == cpu.server_binary


def test_progress_bar() -> None:
    assert inst._progress_bar(15, 30).endswith("15/30")
    assert inst._progress_bar(30, 30).count("#") == 30
