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


def test_cuda_architectures_only_for_cuda_and_in_the_key() -> None:
    general, hopper = inst.plan_build(backend="cuda"), inst.plan_build(backend="cuda", cuda_architectures="90")
    assert "-DCMAKE_CUDA_ARCHITECTURES=90" in hopper.cmake_flags
    assert not any("CMAKE_CUDA_ARCHITECTURES" in f for f in general.cmake_flags)
    assert hopper.key != general.key, "a build for one architecture must never stand in for a general one"
    assert not any("CMAKE_CUDA_ARCHITECTURES" in f for f in inst.plan_build(backend="cpu", cuda_architectures="90").cmake_flags)


def test_a_source_folder_without_cmake_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JUPYTER_MODELDEPLOY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(inst.shutil, "which", lambda tool: f"/x/{tool}")
    with pytest.raises(RuntimeError, match=r"not a llama\.cpp source tree"):
        inst.build_llama_server(inst.plan_build(backend="cpu"), source=tmp_path, log=lambda _: None)


def test_the_sdist_is_looked_for_in_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JUPYTER_MODELDEPLOY_CACHE", str(tmp_path))
    assert inst.sdist_folder() == tmp_path / "downloads"


def test_a_cached_sdist_is_not_downloaded_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JUPYTER_MODELDEPLOY_CACHE", str(tmp_path))
    cached = tmp_path / "downloads" / f"llama_cpp_python-{inst.LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    cached.parent.mkdir()
    cached.write_bytes(b"")
    monkeypatch.setattr(inst.subprocess, "run", lambda *a, **k: pytest.fail("downloaded again"))
    assert inst.ensure_sdist(log=lambda _: None) == cached
