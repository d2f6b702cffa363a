"""A client of the REST API, used by the CLI, the `%deploy` magic and the widgets.

It finds the Jupyter server by itself: explicit url/token, else `JUPYTER_SERVER_URL` /
`JUPYTER_TOKEN`, else (inside a kernel) the server whose pid is `JPY_PARENT_PID`, else the
newest running server.
"""

from __future__ import annotations

import json
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


LOG_COLUMNS = ("id", "at", "key_id", "key_name", "hub_user", "deployment_id", "deployment", "model", "method", "route", "status",
               "latency_ms", "first_token_ms", "prompt_tokens", "completion_tokens", "streamed", "has_bodies")
USAGE_COLUMNS = ("minute", "key_id", "key_name", "hub_user", "deployment_id", "deployment", "model", "requests", "errors",
                 "prompt_tokens", "completion_tokens")


def _frame(rows: list[dict[str, Any]], time_columns: list[str], columns: tuple[str, ...]) -> Any:
    """Rows of the API as a pandas DataFrame (its columns even when there are no rows)."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(columns))
    for name in time_columns:
        frame[name] = pd.to_datetime(frame[name], unit="s", utc=True)
    return frame


class ModelDeployClient:
    """Synchronous client of `/api/modeldeploy/`."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 60.0):
        self.server = find_server(url, token)
        headers = {"Authorization": f"token {self.server.token}"} if self.server.token else {}
        self.http = httpx.Client(base_url=self.server.url, headers=headers, timeout=timeout)

    @property
    def api(self) -> str:
        """The REST API's path under the server URL, `api/modeldeploy`."""
        return "api/modeldeploy"

    def close(self) -> None:
        """Close the HTTP connections; the client cannot be used afterwards."""
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
        """The server's state: version, kinds, engines available, GPU presence, deployments per status."""
        return self._request("GET", "status")

    def schemas(self, kind: str | None = None) -> dict[str, Any]:
        """The JSON Schema of every kind's configuration, or of one `kind` (ModelDeployError 404 when unknown)."""
        return self._request("GET", f"schemas/{kind}" if kind else "schemas")

    def list(self) -> list[dict[str, Any]]:
        """The record of every deployment, live or not, oldest first."""
        return self._request("GET", "deployments")["deployments"]

    def get(self, ref: str) -> dict[str, Any]:
        """One deployment's record, by id or name (the live one first); ModelDeployError 404 when there is none."""
        return self._request("GET", f"deployments/{ref}")

    def export(self, ref: str, *, include_secrets: bool = False) -> dict[str, Any]:
        """The deployment's configuration, to launch or import again; secrets only with `include_secrets`."""
        return self._request("GET", f"deployments/{ref}/export", params={"include_secrets": int(include_secrets)})

    def logs(self, ref: str, tail: int = 200) -> list[str]:
        """The last `tail` lines of the deployment's engine console."""
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
        """The deployment's chart series after `since` (Unix seconds; all kept samples by default), and its totals."""
        params = {"since": since} if since is not None else {}
        return self._request("GET", f"deployments/{ref}/metrics", params=params)

    def host_metrics(self, since: float | None = None) -> dict[str, Any]:
        """The host's chart series (CPU, memory, network, disk) and each GPU's, after `since` (Unix seconds) or all."""
        params = {"since": since} if since is not None else {}
        return self._request("GET", "host/metrics", params=params)

    def usage(self, *, key: str | None = None, deployment: str | None = None, model: str | None = None,
              since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
        """Exact per-key usage rows, per key per model per minute (requests, errors, prompt and completion tokens)."""
        params = {k: v for k, v in (("key", key), ("deployment", deployment), ("model", model), ("since", since),
                                    ("until", until)) if v is not None}
        return self._request("GET", "usage", params=params)["rows"]

    def usage_frame(self, **filters: Any) -> Any:
        """`usage(**filters)` as a pandas DataFrame, `minute` as UTC timestamps."""
        return _frame(self.usage(**filters), ["minute"], USAGE_COLUMNS)

    def requests(self, *, deployment: str | None = None, key: str | None = None, since: float | None = None,
                 limit: int = 1000, bodies: bool = False) -> list[dict[str, Any]]:
        """The request log, newest first (`bodies`: with the captured bodies, where there are any)."""
        params = {k: v for k, v in (("deployment", deployment), ("key", key), ("since", since)) if v is not None}
        return self._request("GET", "requests", params={**params, "limit": limit, "bodies": int(bodies)})["requests"]

    def requests_frame(self, **filters: Any) -> Any:
        """`requests(**filters)` as a pandas DataFrame, `at` as UTC timestamps."""
        return _frame(self.requests(**filters), ["at"], LOG_COLUMNS + (("request_body", "response_body")
                                                                     if filters.get("bodies") else ()))

    def request_entry(self, entry_id: int) -> dict[str, Any]:
        """One logged request with its captured bodies."""
        return self._request("GET", f"requests/{int(entry_id)}")

    def replay(self, entry_id: int, *, to: str | None = None, model: str | None = None,
               timeout: float = 600.0) -> httpx.Response:
        """Send a captured request again, to its deployment or another (`to`), with a key made for it
        (one minute long); `model` replaces the body's model. Returns the endpoint's answer."""
        entry = self.request_entry(entry_id)
        if not entry["has_bodies"] or entry["request_body"] is None:
            raise ModelDeployError(f"request {entry_id} was not captured: its deployment had capture_bodies off")
        target = self.get(to or entry["deployment_id"])
        body = entry["request_body"].encode()
        if model is not None:
            try:
                data = json.loads(body)
            except ValueError:
                raise ModelDeployError(f"request {entry_id}'s body is not JSON: its model cannot be replaced") from None
            body = json.dumps({**data, "model": model}).encode()
        key = self.create_token(deployment=target["id"], name=f"replay of request {entry_id}", expires_in_s=60)
        headers = {"Authorization": f"Bearer {key['token']}", "Content-Type": "application/json"}
        try:
            return httpx.request(entry["method"], target["endpoint_url"] + entry["route"], content=body, headers=headers,
                                 timeout=timeout)
        finally:
            self.revoke_token(key["id"])

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
        """Check a configuration without launching it: the normalised config and notices.

        An invalid one raises ModelDeployError 422, its `errors` naming the wrong fields.
        """
        return self._request("POST", "validate", json=config)

    def launch(self, config: dict[str, Any], *, dry_run: bool = False, start: bool = True,
               force: bool = False) -> dict[str, Any]:
        """Launch (or with `dry_run` only plan) a configuration; `force` starts it even when it does not fit."""
        params = {"dry_run": int(dry_run), "launch": int(start), "force": int(force)}
        return self._request("POST", "deployments", json=config, params=params)

    def import_config(self, config: dict[str, Any], *, start: bool = True) -> dict[str, Any]:
        """Create a deployment from an exported configuration and launch it unless `start` is false; its record."""
        return self._request("POST", "import", json=config, params={"launch": int(start)})

    def stop(self, ref: str) -> dict[str, Any]:
        """Stop the deployment's engine (nothing when it is not running); its record, kept for a relaunch."""
        return self._request("POST", f"deployments/{ref}/stop")

    def relaunch(self, ref: str) -> dict[str, Any]:
        """Start a stopped or failed deployment again with its stored configuration; its record.

        ModelDeployError 409 when it is still live or no longer fits in memory.
        """
        return self._request("POST", f"deployments/{ref}/relaunch")

    def delete(self, ref: str) -> None:
        """Stop the deployment and forget it, with its keys and jupyter-ai models."""
        self._request("DELETE", f"deployments/{ref}")

    def clone(self, ref: str, name: str, overrides: dict[str, Any] | None = None, *, start: bool = True,
              include_secrets: bool = True) -> dict[str, Any]:
        """The server's clone: a new deployment from another's configuration (secrets copied there when asked)."""
        body = {"name": name, "overrides": overrides or {}, "launch": start, "include_secrets": include_secrets}
        return self._request("POST", f"deployments/{ref}/clone", json=body)

    def register_ai(self, ref: str, version: int | None = None) -> dict[str, Any]:
        """Make the deployment's models jupyter-ai models, with a key of their own: 3.x custom models, or 2.x's
        OpenAI-compatible providers' settings (`version`; by default the server's choice)."""
        params = {"version": str(version)} if version is not None else {}
        return self._request("POST", f"deployments/{ref}/jupyter-ai", params=params)

    def ai_registration(self, ref: str) -> dict[str, Any]:
        """Whether the deployment is registered with jupyter-ai, and its models there now (keys left out)."""
        return self._request("GET", f"deployments/{ref}/jupyter-ai")

    def unregister_ai(self, ref: str) -> dict[str, Any]:
        """Remove the deployment's jupyter-ai models and revoke their key."""
        return self._request("DELETE", f"deployments/{ref}/jupyter-ai")

    def add_adapter(self, ref: str, name: str, path: str) -> dict[str, Any]:
        """Load a LoRA adapter from `path` as model `name` on a serving deployment; its record.

        ModelDeployError 400 when the deployment has no `enable_lora`, 409 when it is not serving or `name` is taken.
        """
        return self._request("POST", f"deployments/{ref}/adapters", json={"name": name, "path": path})

    def remove_adapter(self, ref: str, name: str) -> dict[str, Any]:
        """Unload the LoRA adapter `name` from a serving deployment; its record (ModelDeployError 404 when not served)."""
        return self._request("DELETE", f"deployments/{ref}/adapters/{name}")

    def tokens(self) -> list[dict[str, Any]]:
        """Every key's description (never its value), revoked ones included."""
        return self._request("GET", "tokens")["tokens"]

    def create_token(
        self, *, deployment: str | None = None, project: str | None = None, name: str | None = None,
        expires_in_s: float | None = None, role: str | None = None, models: list[str] | None = None,
        quotas: dict[str, int | None] | None = None, priority: str | None = None,
    ) -> dict[str, Any]:
        """A new key scoped to a deployment or a project (its value, `token`, is shown this once).

        `quotas`: `requests_per_minute`, `tokens_per_minute`, `max_in_flight`, `daily_tokens`. `priority`:
        `interactive` (the default) or `batch`, whose requests wait behind interactive ones in a deployment's queue.
        """
        body = {"deployment": deployment, "project": project, "name": name, "expires_in_s": expires_in_s,
                "role": role, "models": models, "quotas": quotas, "priority": priority}
        return self._request("POST", "tokens", json={k: v for k, v in body.items() if v is not None})

    def update_token(self, token_id: str, **changes: Any) -> dict[str, Any]:
        """Change a key's label, expiry (`expires_in_s`, `no_expiry`), quotas or priority; effective for its next
        request."""
        return self._request("PATCH", f"tokens/{token_id}", json=changes)

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        """Revoke a key at once; its description, now with `revoked_at` (ModelDeployError 404 when unknown)."""
        return self._request("DELETE", f"tokens/{token_id}")

    def share(self, ref: str) -> dict[str, Any]:
        """A deployment's JupyterHub share: `share_with`, `share_url` (its share page; None outside a Hub) and
        `holders` (the keys teammates got there)."""
        return self._request("GET", f"deployments/{ref}/share")

    def set_share(self, ref: str, *, users: list[str] | None = None, groups: list[str] | None = None,
                  **key: Any) -> dict[str, Any]:
        """Share a deployment with Hub users and groups, replacing its share (`key`: the `role`, `models`,
        `priority` and `quotas` their keys carry); the keys of whoever it no longer names are revoked (`revoked`)."""
        return self._request("PUT", f"deployments/{ref}/share", json={"users": users or [], "groups": groups or [],
                                                                       **key})

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
