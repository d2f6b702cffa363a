"""`jupyter modeldeploy install-engine` runs the engines' own installer programs (the CLI imports no engine)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from jupyter_modeldeploy import cli


@pytest.mark.parametrize("kind", sorted(cli.INSTALLERS))
def test_each_installer_is_a_runnable_program(kind: str) -> None:
    out = subprocess.run([*cli.installer_argv(kind), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--force" in out.stdout


def test_install_engine_passes_its_options_and_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 3)

    monkeypatch.setattr(cli.subprocess, "run", fake_run)
    assert cli.main(["install-engine", "llamacpp", "--force", "--backend", "cpu"]) == 3
    assert calls == [[sys.executable, "-m", "jupyter_modeldeploy.engines.llamacpp_install", "--force", "--backend", "cpu"]]


def test_llamacpp_source_and_architecture_reach_the_installer() -> None:
    argv = cli.installer_argv("llamacpp", backend="cuda", source="/src/llama.cpp", cuda_arch="90")
    assert argv[-6:] == ["--backend", "cuda", "--source", "/src/llama.cpp", "--cuda-arch", "90"]
    assert "--source" not in cli.installer_argv("llm", source="/src/llama.cpp")
