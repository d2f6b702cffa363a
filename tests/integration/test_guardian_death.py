"""Engines never outlive their guardian or the Jupyter server, however those die (real llama-server)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.jupyter import JupyterProcess

pytestmark = pytest.mark.integration

GRACE_S = 5  # JupyterProcess runs the server with --ModelDeployApp.stop_grace_s=5


@pytest.fixture
def server(tmp_path: Path, llama_server_bin: Path) -> Iterator[JupyterProcess]:
    proc = JupyterProcess(tmp_path).start()
    yield proc
    proc.kill()


def serving(server: JupyterProcess, gguf: Path, name: str) -> tuple[dict, list[psutil.Process]]:
    """Launch a small llama.cpp deployment, wait until it serves; its record and engine processes.

    With restart `never`: a crash must leave it `failed`, not relaunched after the back-off
    (test_restart_policy.py tests the restarts), or a slow run could see it loading again."""
    client = server.client()
    record = client.launch({"kind": "llamacpp", "name": name, "model": str(gguf), "threads": 1, "ctx_size": 512,
                            "public": True, "restart": "never"})
    record = client.wait(record["id"], timeout=120)
    guardian = psutil.Process(record["pid"])
    engines = guardian.children(recursive=True)
    assert any(p.name() == "llama-server" for p in engines), engines
    return record, engines


def test_kill_9_of_the_guardian_takes_the_engine_and_fails_the_deployment(server: JupyterProcess,
                                                                           smollm2_gguf: Path) -> None:
    record, engines = serving(server, smollm2_gguf, "guardian-kill")
    os.kill(record["pid"], signal.SIGKILL)
    assert not psutil.wait_procs(engines, timeout=3)[1], "llama-server outlived its guardian"
    client = server.client()
    deadline = time.monotonic() + 5
    while (now := client.get(record["id"]))["status"] in ("active", "idle") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert now["status"] == "failed", now
    assert "signal 9" in now["status_reason"]
    chat = httpx.post(record["api_base"] + "/chat/completions", timeout=10,
                      json={"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert chat.status_code != 200
    started = time.monotonic()
    client.stop(record["id"])
    assert time.monotonic() - started < 2


def test_no_engine_survives_a_sigkill_of_the_jupyter_server(server: JupyterProcess, smollm2_gguf: Path) -> None:
    record, engines = serving(server, smollm2_gguf, "server-kill")
    family = [psutil.Process(record["pid"]), *engines]
    server.kill()
    assert not psutil.wait_procs(family, timeout=GRACE_S + 2)[1], "engine processes outlived the Jupyter server"
