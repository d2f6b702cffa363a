"""A real Jupyter server with the extension whose `llama-server` is the fake engine: every REST and
gateway path runs for real in seconds, without a model."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from tests.support.jupyter import JupyterProcess

FAKE_ENGINE = Path(__file__).resolve().parent / "fake_engine.py"


def fake_llama_server(folder: Path, *engine_args: str) -> Path:
    """An executable that runs the fake engine with llama-server's command line (and `engine_args` first:
    `--token-s 0.01` paces it like a GPU-bound engine)."""
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / "llama-server"
    fixed = "".join(f" {shlex.quote(a)}" for a in engine_args)
    program.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_ENGINE}{fixed} \"$@\"\n")
    program.chmod(0o755)
    return program


def fake_jupyter(home: Path, *extra_args: str) -> JupyterProcess:
    """A started Jupyter server in `home` serving llamacpp deployments with the fake engine."""
    program = fake_llama_server(home / "bin")
    return JupyterProcess(home, extra_args=[f"--ModelDeployApp.llamacpp_server={program}",
                                            "--ModelDeployApp.llamacpp_engine=llama-server", *extra_args]).start()


def fake_deployment(name: str, **fields: object) -> dict[str, object]:
    """A llamacpp configuration the fake engine serves (under the deployment's name)."""
    return {"kind": "llamacpp", "name": name, "model": str(FAKE_ENGINE), "route": name, **fields}
