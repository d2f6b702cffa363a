"""The share service's web application: Hub login (OAuth), the share pages, and the membership sweep."""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any
from urllib.parse import quote

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import web

from . import pages
from .hub_api import HubApi, HubPerson, OwnerUnavailable, Refused

OWNER = r"(?P<owner>[a-z0-9][a-z0-9._@+-]{0,127})"
ASK_AT_ONCE = 16  # owners' servers the index page asks at the same time
DEPLOYMENT = r"(?P<deployment>[A-Za-z0-9][A-Za-z0-9._-]{0,62})"


class ShareHandler(HubOAuthenticated, web.RequestHandler):
    """A page for a logged-in Hub user (any user: what they may have is the owner's server's call)."""

    @property
    def hub(self) -> HubApi:
        return self.settings["share_hub"]

    def origin(self) -> str:
        """The Hub's public origin as the browser reached it (through the proxy)."""
        return f"{self.request.protocol}://{self.request.host}"

    async def me(self) -> HubPerson:
        """The logged-in user and their groups, as the Hub has them now."""
        name = self.current_user["name"]
        person = await self.hub.person(name)
        if person is None:
            raise web.HTTPError(403, f"the Hub has no user {name}")
        return person

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.finish(pages.message_page("Share", str(message), error=True))


class DeploymentPage(ShareHandler):
    """GET a deployment's share page; POST gets the user a key of it (shown once)."""

    async def offer(self, owner: str, deployment: str) -> tuple[str, dict[str, Any], HubPerson] | None:
        """(the owner's server path, the offer, me), or None having answered why there is none."""
        me = await self.me()
        try:
            server = await self.hub.server_of(owner)
            offers = await self.hub.owner_call(server, "POST", "offers", {"user": me.name, "groups": me.groups})
        except OwnerUnavailable as exc:
            self.set_status(503)
            self.finish(pages.message_page("Not available now", str(exc), error=True))
            return None
        except Refused as exc:
            self.set_status(502)
            self.finish(pages.message_page("Not available now", f"{owner}'s server refused: {exc}", error=True))
            return None
        found = next((o for o in offers["offers"] if deployment in (o["name"], o["deployment"])), None)
        if found is None:
            self.set_status(403)
            self.finish(pages.message_page("Not shared with you",
                                           f"{owner} does not share a deployment {deployment!r} with {me.name}.",
                                           error=True))
            return None
        return server, found, me

    @web.authenticated
    async def get(self, owner: str, deployment: str) -> None:
        found = await self.offer(owner, deployment)
        if found is not None:
            _, offer, _ = found
            self.finish(pages.offer_page(owner, offer, self.origin() + offer["api_path"], self.xsrf_form_html()))

    @web.authenticated
    async def post(self, owner: str, deployment: str) -> None:
        found = await self.offer(owner, deployment)
        if found is None:
            return
        server, offer, me = found
        try:
            key = await self.hub.owner_call(server, "POST", "keys",
                                            {"user": me.name, "groups": me.groups, "deployment": offer["deployment"]})
        except (OwnerUnavailable, Refused) as exc:
            self.set_status(403 if isinstance(exc, Refused) and exc.status == 403 else 503)
            self.finish(pages.message_page("No key", str(exc), error=True))
            return
        self.set_header("Cache-Control", "no-store")
        self.finish(pages.key_page(owner, key["offer"], self.origin() + key["offer"]["api_path"], key["token"]))


class IndexPage(ShareHandler):
    """GET: what is shared with the user on the servers running now."""

    @web.authenticated
    async def get(self) -> None:
        me = await self.me()
        servers = await self.hub.running_servers()

        asking = asyncio.Semaphore(ASK_AT_ONCE)

        async def offers_of(owner: str, path: str) -> list[tuple[str, dict[str, Any], str]]:
            try:
                async with asking:
                    answer = await self.hub.owner_call(path, "POST", "offers", {"user": me.name, "groups": me.groups})
            except (OwnerUnavailable, Refused):
                return []
            prefix = self.settings["share_prefix"]
            return [(owner, o, url_path_join(prefix, quote(owner), quote(o["name"]))) for o in answer["offers"]]

        found = await asyncio.gather(*(offers_of(o, p) for o, p in sorted(servers.items())))
        self.finish(pages.index_page(me.name, [row for rows in found for row in rows]))


def make_app(hub: HubApi, prefix: str) -> web.Application:
    """The service's tornado application under `prefix` (JUPYTERHUB_SERVICE_PREFIX)."""
    base = re.escape(prefix.rstrip("/"))
    return web.Application(
        [
            (rf"{base}/?", IndexPage),
            (rf"{base}/oauth_callback", HubOAuthCallbackHandler),
            (rf"{base}/{OWNER}/{DEPLOYMENT}/?", DeploymentPage),
        ],
        cookie_secret=secrets.token_bytes(32), xsrf_cookies=True, share_hub=hub, share_prefix=prefix,
    )
