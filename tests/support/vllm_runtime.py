"""Finding the vLLM environment and running a real vLLM server in tests.

`require_vllm_python()` skips a test when vLLM is not installed, unless the environment
variable MODELDEPLOY_REQUIRE_VLLM is set (CI sets it where vLLM must be tested): then the
missing environment is a failure. `VllmProcess` starts a `LaunchPlan` as its own process
group and stops it (SIGTERM, grace period, SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jupyter_modeldeploy.engines.base import LaunchPlan
from jupyter_modeldeploy.engines.vllm_install import find_vllm_python

REQUIRE_ENV = "MODELDEPLOY_REQUIRE_VLLM"


def require_vllm_python() -> str:
    """The vLLM environment's Python; skips (or fails, with MODELDEPLOY_REQUIRE_VLLM) without one."""
    configured = os.environ.get("MODELDEPLOY_VLLM_PYTHON")
    if configured:
        return configured
    found = find_vllm_python()
    if found is not None:
        return str(found)
    reason = (
        "the vLLM environment is not installed: run "
        "`python -m jupyter_modeldeploy.engines.vllm_install` (about 4 minutes)"
    )
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{REQUIRE_ENV} is set but {reason}")
    pytest.skip(reason)


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class VllmProcess:
    """A real vLLM server started from a LaunchPlan, its console kept in a log file."""

    plan: LaunchPlan
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started_s: float = 0.0
    ready_after_s: float | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, **self.plan.env, **self.extra_env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.plan.argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started_s = time.monotonic()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_healthy(self, timeout_s: float = 900.0) -> float:
        """Poll the health path until 200; returns seconds since start. Fails if vLLM exits."""
        assert self.proc is not None
        deadline = self.started_s + timeout_s
        url = self.base_url + self.plan.health_path
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError), \
                    urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    self.ready_after_s = time.monotonic() - self.started_s
                    return self.ready_after_s
            time.sleep(1.0)
        raise TimeoutError(f"vLLM not healthy after {timeout_s} s:\n{self.log_tail()}")

    def stop(self, grace_s: float = 30.0) -> float:
        """SIGTERM to the process group, then SIGKILL after the grace period; returns seconds taken."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        began = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return time.monotonic() - began
