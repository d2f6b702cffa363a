"""A client of the REST API, used by the CLI, the `%deploy` magic and the widgets.

It finds the Jupyter server by itself: explicit url/token, else `JUPYTER_SERVER_URL` /
`JUPYTER_TOKEN`, else (inside a kernel) the server whose pid is `JPY_PARENT_PID`, else the
newest running server.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx


class ModelDeployError(Exception):
    """An error answer from the server (or no server at all); `errors` name config fields."""

    def __init__(self, message: str, status: int | None = None, errors: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.errors = errors or []


@dataclass(frozen=True)
class ServerInfo:
    """Where the Jupyter server is and how to authenticate."""

    url: str
    token: str


def _running_servers() -> list[dict[str, Any]]:
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return []
    return list(list_running_servers())


def find_server(url: str | None = None, token: str | None = None) -> ServerInfo:
    """Locate the Jupyter server to talk to (see the module docstring for the order)."""
    url = url or os.environ.get("JUPYTER_SERVER_URL") or os.environ.get("MODELDEPLOY_SERVER_URL")
    token = token if token is not None else (os.environ.get("JUPYTER_TOKEN") or os.environ.get("MODELDEPLOY_TOKEN"))
    if url:
        if token is None:
            for info in _running_servers():
                if info.get("url", "").rstrip("/") == url.rstrip("/"):
                    token = info.get("token", "")
        return ServerInfo(url=url.rstrip("/") + "/", token=token or "")
    servers = _running_servers()
    parent = os.environ.get("JPY_PARENT_PID")
    chosen = None
    if parent:
        chosen = next((s for s in servers if str(s.get("pid")) == parent), None)
    if chosen is None and servers:
        chosen = servers[-1]
    if chosen is None:
        raise ModelDeployError(
            "no running Jupyter server found: start one (make run / jupyter lab) or pass --url and --token"
        )
    return ServerInfo(url=chosen["url"].rstrip("/") + "/", token=token if token is not None else chosen.get("token", ""))


class ModelDeployClient:
    """Synchronous client of `/api/modeldeploy/`."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 60.0):
        self.server = find_server(url, token)
        headers = {"Authorization": f"token {self.server.token}"} if self.server.token else {}
        self.http = httpx.Client(base_url=self.server.url, headers=headers, timeout=timeout)

    @property
    def api(self) -> str:
        return "api/modeldeploy"

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, f"{self.api}/{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise ModelDeployError(f"cannot reach the Jupyter server at {self.server.url}: {exc}") from None
        if response.status_code == 204:
            return None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            message = data.get("error") if isinstance(data, dict) else None
            if response.status_code == 403 and not message:
                message = "forbidden: check the Jupyter token"
            raise ModelDeployError(
                message or f"HTTP {response.status_code}", response.status_code,
                data.get("errors") if isinstance(data, dict) else None,
            )
        return data

    # Read ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self._request("GET", "status")

    def schemas(self, kind: str | None = None) -> dict[str, Any]:
        return self._request("GET", f"schemas/{kind}" if kind else "schemas")

    def list(self) -> list[dict[str, Any]]:
        return self._request("GET", "deployments")["deployments"]

    def get(self, ref: str) -> dict[str, Any]:
        return self._request("GET", f"deployments/{ref}")

    def export(self, ref: str, *, include_secrets: bool = False) -> dict[str, Any]:
        return self._request("GET", f"deployments/{ref}/export", params={"include_secrets": int(include_secrets)})

    def logs(self, ref: str, tail: int = 200) -> list[str]:
        return self._request("GET", f"deployments/{ref}/logs", params={"tail": tail})["lines"]

    def follow_logs(self, ref: str, tail: int = 50) -> Iterator[str]:
        """Console lines as they come, until the engine ends."""
        with self.http.stream(
            "GET", f"{self.api}/deployments/{ref}/logs", params={"tail": tail, "follow": 1}, timeout=None
        ) as response:
            if response.status_code >= 400:
                response.read()
                raise ModelDeployError(response.json().get("error", f"HTTP {response.status_code}"), response.status_code)
            yield from response.iter_lines()

    def metrics(self, ref: str, since: float | None = None) -> dict[str, Any]:
        params = {"since": since} if since is not None else {}
        return self._request("GET", f"deployments/{ref}/metrics", params=params)

    def host_metrics(self, since: float | None = None) -> dict[str, Any]:
        params = {"since": since} if since is not None else {}
        return self._request("GET", "host/metrics", params=params)

    # Write --------------------------------------------------------------------------------

    def launch_defaults(self) -> dict[str, Any]:
        """The kind and values a new launch form opens on."""
        return self._request("GET", "launch-defaults")

    def test_command(self, ref: str, *, key: str | None = None, prompt: str | None = None,
                     model: str | None = None) -> dict[str, Any]:
        """The deployment's test command from the server (with `key`, or its own key when it has one)."""
        body = {k: v for k, v in (("key", key), ("prompt", prompt), ("model", model)) if v}
        return self._request("POST", f"deployments/{ref}/test-command", json=body)

    def validate(self, config: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "validate", json=config)

    def launch(self, config: dict[str, Any], *, dry_run: bool = False, start: bool = True,
               force: bool = False) -> dict[str, Any]:
        """Launch (or with `dry_run` only plan) a configuration; `force` starts it even when it does not fit."""
        params = {"dry_run": int(dry_run), "launch": int(start), "force": int(force)}
        return self._request("POST", "deployments", json=config, params=params)

    def import_config(self, config: dict[str, Any], *, start: bool = True) -> dict[str, Any]:
        return self._request("POST", "import", json=config, params={"launch": int(start)})

    def stop(self, ref: str) -> dict[str, Any]:
        return self._request("POST", f"deployments/{ref}/stop")

    def relaunch(self, ref: str) -> dict[str, Any]:
        return self._request("POST", f"deployments/{ref}/relaunch")

    def delete(self, ref: str) -> None:
        self._request("DELETE", f"deployments/{ref}")

    def clone(self, ref: str, name: str, overrides: dict[str, Any] | None = None, *, start: bool = True,
              include_secrets: bool = True) -> dict[str, Any]:
        """The server's clone: a new deployment from another's configuration (secrets copied there when asked)."""
        body = {"name": name, "overrides": overrides or {}, "launch": start, "include_secrets": include_secrets}
        return self._request("POST", f"deployments/{ref}/clone", json=body)

    def add_adapter(self, ref: str, name: str, path: str) -> dict[str, Any]:
        return self._request("POST", f"deployments/{ref}/adapters", json={"name": name, "path": path})

    def remove_adapter(self, ref: str, name: str) -> dict[str, Any]:
        return self._request("DELETE", f"deployments/{ref}/adapters/{name}")

    def tokens(self) -> list[dict[str, Any]]:
        return self._request("GET", "tokens")["tokens"]

    def create_token(
        self, *, deployment: str | None = None, project: str | None = None, name: str | None = None,
        expires_in_s: float | None = None,
    ) -> dict[str, Any]:
        body = {"deployment": deployment, "project": project, "name": name, "expires_in_s": expires_in_s}
        return self._request("POST", "tokens", json={k: v for k, v in body.items() if v is not None})

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        return self._request("DELETE", f"tokens/{token_id}")

    # Helpers ------------------------------------------------------------------------------

    def wait(self, ref: str, statuses: tuple[str, ...] = ("active", "idle"), timeout: float = 900.0,
             poll_s: float = 0.5, on_record: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the deployment reaches one of `statuses`; raises if it fails or times out.

        `on_record` sees every record polled (its `progress` says where loading is).
        """
        deadline = time.monotonic() + timeout
        while True:
            record = self.get(ref)
            if on_record is not None:
                on_record(record)
            if record["status"] in statuses:
                return record
            if record["status"] == "failed" and "failed" not in statuses:
                raise ModelDeployError(f"deployment {record['name']} failed: {record['status_reason']}")
            if record["status"] == "stopped" and "stopped" not in statuses:
                raise ModelDeployError(f"deployment {record['name']} stopped: {record['status_reason']}")
            if time.monotonic() > deadline:
                raise ModelDeployError(f"deployment {record['name']} still {record['status']} after {timeout:g} s")
            time.sleep(poll_s)
