"""Run a real Jupyter server with the extension for tests: start, wait, stop, kill."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from jupyter_modeldeploy.client import ModelDeployClient

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, n: int = 40) -> str:
    """The last lines of a log file ("" when there is none)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 60.0, *, group: bool = False) -> None:
    """SIGTERM, then SIGKILL (to its process group with `group`) after `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait()


class JupyterProcess:
    """A `jupyter lab` (or `jupyter server`) process with its own config, data and state dirs."""

    def __init__(self, home: Path, *, app: str = "server", extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, port: int | None = None, token: str | None = None,
                 python: str | None = None, root_dir: Path | None = None):
        """`python`: another environment's interpreter (run from `home`, without this one's PYTHONPATH);
        `root_dir`: the server's root (default: the repository)."""
        self.home = home
        self.python = python
        self.root_dir = root_dir or REPO_ROOT
        self.app = app
        self.extra_args = extra_args or []
        self.extra_env = env or {}
        self.port = port or free_port()
        self.token = token or secrets.token_hex(16)
        self.state_dir = home / "state"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = home / f"jupyter-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_", "JPY_"))}
        if self.python is not None:
            env.pop("PYTHONPATH", None)  # that environment's own package, not this checkout's
            # `python -m jupyter lab` runs the `jupyter-lab` it finds on PATH first: that environment's.
            env["PATH"] = os.pathsep.join([str(Path(self.python).parent), env.get("PATH", "")])
        env.update(
            {
                "JUPYTER_CONFIG_DIR": str(self.home / "config"),
                "JUPYTER_DATA_DIR": str(self.home / "data"),
                "JUPYTER_RUNTIME_DIR": str(self.home / "runtime"),
                "HF_HUB_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 120.0) -> JupyterProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [
            self.python or sys.executable, "-m", "jupyter", self.app, "--no-browser", "--allow-root",
            f"--ServerApp.port={self.port}", "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.jpserver_extensions={'jupyter_modeldeploy': True}",
            f"--ModelDeployApp.state_dir={self.state_dir}", "--ModelDeployApp.stop_grace_s=5",
            *self.extra_args,
        ]
        log = self.log_path.open("ab")
        # Another environment starts outside the checkout: `python -m` would import the checkout's package.
        cwd = self.home if self.python is not None else REPO_ROOT
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env(), cwd=cwd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}api/modeldeploy/status", headers=self.headers, timeout=2).status_code == 200:
                    return self
            time.sleep(0.3)
        tail = self.log_tail()
        self.stop()  # a server that never answered is not left running after the test that wanted it
        raise RuntimeError(f"jupyter did not answer within {timeout} s:\n{tail}")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def client(self) -> ModelDeployClient:
        return ModelDeployClient(self.url, self.token)

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A raw REST call (for status-code assertions); `headers` add to the Jupyter token."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.url}api/modeldeploy/{path}", headers=headers, timeout=60, **kwargs)

    def log_tail(self, n: int = 40) -> str:
        return log_tail(self.log_path, n)

    def stop(self, timeout: float = 60.0) -> None:
        terminate(self.proc, timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
