"""What the share service asks JupyterHub and the owners' servers, with the service's own Hub token.

Owners' servers are reached through the Hub's proxy (the service's `access:servers` scope opens
their `/hub-share` routes, which answer only this service).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

SHARE_API = "api/modeldeploy/hub-share"
PAGINATED = {"Accept": "application/jupyterhub-pagination+json"}


class OwnerUnavailable(Exception):
    """The owner's server is not running, not ready, or does not serve this extension."""


class Refused(Exception):
    """The owner's server refused (e.g. not shared with this user); `message` says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HubPerson:
    """A Hub user: their name and groups."""

    name: str
    groups: list[str]


class HubApi:
    """The Hub's REST API and the owners' servers, as the share service."""

    def __init__(self, api_url: str, token: str, proxy_url: str, *, timeout_s: float = 30.0):
        self.api_url = api_url.rstrip("/")
        self.proxy_url = proxy_url.rstrip("/")
        self.http = httpx.AsyncClient(headers={"Authorization": f"token {token}"}, timeout=timeout_s)

    async def close(self) -> None:
        await self.http.aclose()

    async def person(self, name: str) -> HubPerson | None:
        """A Hub user and their groups; None when the Hub has no such user."""
        answer = await self.http.get(f"{self.api_url}/users/{quote(name)}")
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        model = answer.json()
        return HubPerson(model["name"], sorted(model.get("groups") or []))

    async def running_servers(self) -> dict[str, str]:
        """Each user with a ready default server: its URL path (`/user/<name>/`)."""
        servers: dict[str, str] = {}
        offset = 0
        while True:
            answer = await self.http.get(f"{self.api_url}/users", params={"state": "ready", "offset": offset,
                                                                          "limit": 200}, headers=PAGINATED)
            answer.raise_for_status()
            page = answer.json()
            users = page["items"] if isinstance(page, dict) else page
            for user in users:
                server = (user.get("servers") or {}).get("")
                if server and server.get("ready") and server.get("url"):
                    servers[user["name"]] = server["url"]
            if not isinstance(page, dict) or not (page.get("_pagination") or {}).get("next"):
                return servers
            offset += len(users)

    async def server_of(self, owner: str) -> str:
        """The URL path of an owner's ready default server; OwnerUnavailable when there is none."""
        answer = await self.http.get(f"{self.api_url}/users/{quote(owner)}")
        if answer.status_code == 404:
            raise OwnerUnavailable(f"there is no Hub user {owner!r}")
        answer.raise_for_status()
        server = (answer.json().get("servers") or {}).get("")
        if not server or not server.get("ready") or not server.get("url"):
            raise OwnerUnavailable(f"{owner}'s server is not running: shared deployments are served while it runs")
        return str(server["url"])

    async def owner_call(self, server_path: str, method: str, route: str, body: Any = None) -> Any:
        """One /hub-share call to an owner's server; Refused for its 4xx, OwnerUnavailable when it cannot answer."""
        url = f"{self.proxy_url}{server_path.rstrip('/')}/{SHARE_API}/{route}"
        try:
            answer = await self.http.request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise OwnerUnavailable(f"the owner's server did not answer: {type(exc).__name__}") from None
        if "application/json" not in answer.headers.get("content-type", ""):
            # The proxy's or the Hub's own answer (a redirect to spawn, a 404 page): no extension answered.
            raise OwnerUnavailable("the owner's server is not running jupyter-modeldeploy now")
        if answer.status_code >= 400:
            try:
                message = str(answer.json().get("error") or answer.reason_phrase)
            except ValueError:
                message = answer.reason_phrase
            raise Refused(answer.status_code, message)
        try:
            return answer.json()
        except ValueError:
            raise OwnerUnavailable("the owner's server answered no JSON") from None
