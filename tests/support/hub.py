"""A real JupyterHub on loopback for tests: configurable-http-proxy from npm, the dummy authenticator,
the simple local-process spawner, each user's server running this extension with the fake engine.

`configurable-http-proxy` is installed by `make hub-proxy` under the user's cache directory
(`CHP_VERSION`); `chp_program()` finds it there.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

from jupyter_modeldeploy.paths import cache_root
from tests.support.fake_server import fake_llama_server
from tests.support.jupyter import REPO_ROOT, free_port, log_tail, terminate

CHP_VERSION = "5.3.0"


def chp_program() -> Path:
    """The configurable-http-proxy that `make hub-proxy` installed."""
    return cache_root() / f"chp-{CHP_VERSION}" / "node_modules" / ".bin" / "configurable-http-proxy"


class Hub:
    """A running JupyterHub: its public URL and an admin service token for its REST API."""

    def __init__(self, folder: Path, *, settings: dict[str, object] | None = None,
                 environment: dict[str, str] | None = None, engine_args: tuple[str, ...] = (),
                 config_lines: tuple[str, ...] = ()):
        """`settings`: more of the Hub's configuration (`Section.option`: value, lists added to); `environment`:
        more of the users' servers' environment; `engine_args`: the fake engine's (`--token-s 0.05` paces it);
        `config_lines`: Python run at the end of the Hub's configuration file (as an admin would write it)."""
        self.config_lines = config_lines
        self.folder = folder
        self.engine_args = engine_args
        self.settings = settings or {}
        self.environment = environment or {}
        self.port = free_port()
        self.service_token = secrets.token_hex(24)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = folder / "hub.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        program = fake_llama_server(self.folder / "bin", *self.engine_args)
        # Each user's state in their own home (the default: the spawner gives each server its HOME).
        args = ["--allow-root", "--ServerApp.jpserver_extensions={'jupyter_modeldeploy': True}",
                f"--ModelDeployApp.llamacpp_server={program}", "--ModelDeployApp.llamacpp_engine=llama-server"]
        settings = {
            "JupyterHub.ip": "127.0.0.1", "JupyterHub.port": self.port, "JupyterHub.hub_ip": "127.0.0.1",
            "JupyterHub.hub_port": free_port(), "ConfigurableHTTPProxy.api_url": f"http://127.0.0.1:{free_port()}",
            "ConfigurableHTTPProxy.command": [str(chp_program())],
            "JupyterHub.authenticator_class": "dummy", "JupyterHub.spawner_class": "simple",
            "JupyterHub.db_url": f"sqlite:///{self.folder / 'hub.sqlite'}",
            "JupyterHub.cookie_secret_file": str(self.folder / "cookie_secret"),
            "JupyterHub.pid_file": str(self.folder / "hub.pid"),
            "SimpleLocalProcessSpawner.home_dir_template": str(self.folder / "users" / "{username}"),
            "Spawner.cmd": [sys.executable, "-m", "jupyterhub.singleuser"], "Spawner.args": args,
            "Spawner.ip": "127.0.0.1", "Spawner.start_timeout": 120, "Spawner.http_timeout": 120,
            "Spawner.environment": {"PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", **self.environment},
            "JupyterHub.services": [{"name": "tester", "api_token": self.service_token}],
            "JupyterHub.load_roles": [{"name": "admin", "services": ["tester"]}],
        }
        for name, value in self.settings.items():
            if isinstance(value, list) and isinstance(settings.get(name), list):
                value = [*settings[name], *value]  # type: ignore[misc]
            settings[name] = value
        lines = ["c = get_config()  # noqa"]
        for name, value in settings.items():
            section, option = name.split(".")
            lines.append(f"c.{section}.{option} = {json.dumps(value)}")
        return "\n".join([*lines, *self.config_lines]) + "\n"

    def start(self, timeout: float = 120.0) -> Hub:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "jupyterhub_config.py"
        config.write_text(self._config())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_", "JPY_"))}
        env["PYTHONPATH"] = str(REPO_ROOT)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=self.folder,
                                     stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyterhub exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/hub/api/", timeout=2).status_code == 200:
                    return self
            time.sleep(0.3)
        raise RuntimeError(f"jupyterhub did not answer within {timeout} s:\n{self.log_tail()}")

    def api(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """The hub's REST API as the admin service."""
        return httpx.request(method, f"{self.url}/hub/api/{path}", headers={"Authorization": f"token {self.service_token}"},
                             timeout=60, **kwargs)  # type: ignore[arg-type]

    def user_home(self, name: str) -> Path:
        """A user's home folder (their server's `~`: its Jupyter configuration and state)."""
        return self.folder / "users" / name

    def user_server(self, name: str, timeout: float = 120.0) -> str:
        """Create a user, spawn their server and return an API token of theirs (hub credentials)."""
        if self.api("GET", f"users/{name}").status_code == 404:
            self.api("POST", f"users/{name}").raise_for_status()
        self.spawn(name, timeout)
        return self.user_token(name)

    def user_token(self, name: str) -> str:
        """A new API token of a user's (hub credentials)."""
        answer = self.api("POST", f"users/{name}/tokens", json={"note": "test"})
        answer.raise_for_status()
        return answer.json()["token"]

    def spawn(self, name: str, timeout: float = 120.0) -> None:
        """Start a user's server and wait until the Hub says it is ready."""
        assert self.api("POST", f"users/{name}/server").status_code in (201, 202)
        deadline = time.monotonic() + timeout
        while not self.server_of(name).get("ready"):
            assert time.monotonic() < deadline, f"{name}'s server never got ready:\n{self.log_tail()}"
            time.sleep(0.5)

    def server_of(self, name: str) -> dict[str, object]:
        """The Hub's model of a user's default server ({} when it runs none)."""
        return self.api("GET", f"users/{name}").json().get("servers", {}).get("", {})

    def log_tail(self, n: int = 40) -> str:
        return log_tail(self.log_path, n)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the hub, its proxy and the users' servers (the hub stops them on SIGTERM; the group after)."""
        terminate(self.proc, timeout, group=True)
