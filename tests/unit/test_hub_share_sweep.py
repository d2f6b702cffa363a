"""The share service's membership sweep: each running server hears its key holders' Hub groups (None for
someone the Hub no longer has); a server that cannot answer is skipped, not the sweep."""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_modeldeploy.hub_share.hub_api import HubPerson, OwnerUnavailable
from jupyter_modeldeploy.hub_share.membership import sweep


class ScriptedHub:
    """The Hub and owners' servers as the sweep sees them, with the calls it made."""

    def __init__(self) -> None:
        self.sent: dict[str, Any] = {}
        self.people = {"bob": HubPerson("bob", ["ml"]), "carol": HubPerson("carol", [])}

    async def running_servers(self) -> dict[str, str]:
        return {"alice": "/user/alice/", "erin": "/user/erin/", "frank": "/user/frank/"}

    async def person(self, name: str) -> HubPerson | None:
        return self.people.get(name)

    async def owner_call(self, path: str, method: str, route: str, body: Any = None) -> Any:
        if path == "/user/erin/":
            raise OwnerUnavailable("not running the extension")
        if route == "holders":
            return {"holders": ["bob", "carol", "gone"] if path == "/user/alice/" else []}
        self.sent[path] = body
        return {"revoked": [{"id": "t-1"}], "holders": ["bob"]}


def test_each_server_hears_its_holders_groups_and_who_is_gone() -> None:
    hub = ScriptedHub()
    revoked = asyncio.run(sweep(hub))  # type: ignore[arg-type]
    assert hub.sent == {"/user/alice/": {"members": {"bob": ["ml"], "carol": [], "gone": None}}}
    assert revoked == {"alice": ["t-1"]}
