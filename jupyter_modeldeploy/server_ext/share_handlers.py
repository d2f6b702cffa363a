"""REST routes of JupyterHub sharing: the owner's share settings, and the routes only the Hub's share service calls.

The owner reads and changes a deployment's `share_with` (`/deployments/{ref}/share`); a change is in
force at once, and the keys of whoever it no longer names are revoked before the answer. The
`/hub-share/...` routes answer the Hub's share service alone (the caller's Hub identity must be that
service): what is shared with a Hub user, their key, which Hub users hold keys, and the Hub's word
on people's groups, which revokes the keys of whoever left a shared group or the Hub.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from tornado import web

from ..config import ConfigError, field_errors
from ..config.sharing import ShareOptions
from ..gateway.tokens import TokenInfo
from ..supervisor import Deployment, DeploymentError
from .handlers import BaseHandler
from .records import endpoint_url
from .schemas import (
    HubMembers,
    QuotaValues,
    ShareCheck,
    SharedKey,
    ShareHolders,
    ShareKeyRequest,
    ShareOffer,
    ShareOffers,
    ShareState,
    Token,
)
from .schemas import HubPerson as HubPersonBody
from .sharing import HubContext, NotShared, ShareDesk


def _token(info: TokenInfo) -> Token:
    return Token.model_validate(info.to_json())


class ShareBase(BaseHandler):
    """The share desk and this server's place in a Hub."""

    @property
    def desk(self) -> ShareDesk:
        return self.settings["modeldeploy_share_desk"]

    @property
    def hub(self) -> HubContext | None:
        return self.settings.get("modeldeploy_hub")


class DeploymentShareHandler(ShareBase):
    """GET a deployment's share settings, page and holders; PUT new settings (in force at once)."""

    def state(self, dep: Deployment, revoked: list[TokenInfo] | None = None) -> ShareState:
        hub = self.hub
        url = f"{self.request.protocol}://{self.request.host}{hub.share_path(dep)}" if hub is not None else None
        return ShareState(share_with=dep.config.share_with.model_dump(mode="json"), hub=hub is not None, share_url=url,
                          holders=[_token(t) for t in self.desk.holders(dep.id)],
                          revoked=[_token(t) for t in revoked or []])

    @web.authenticated
    async def get(self, ref: str) -> None:
        async def action() -> None:
            self.write_model(self.state(self.lookup(ref)))

        await self.run(action)

    @web.authenticated
    async def put(self, ref: str) -> None:
        async def action() -> None:
            dep = self.lookup(ref)
            try:
                share = ShareOptions.model_validate(self.json_body())
            except ValidationError as exc:
                raise ConfigError(field_errors(exc)) from None
            unknown = [m for m in share.models or [] if m not in dep.models]
            if unknown:
                raise DeploymentError(f"{dep.name} serves no model {unknown[0]!r}; it serves {', '.join(dep.models)}", 400)
            revoked = self.desk.reshare(dep, share)
            self.supervisor.store.save(dep.to_stored())
            self.write_model(self.state(dep, revoked))

        await self.run(action)


class ShareServiceHandler(ShareBase):
    """Routes only the Hub's share service may call: 403 for anyone else, 404 outside a Hub (answered in
    `prepare`, so the route's own method runs for the service alone)."""

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        if self._finished or self.current_user is None:
            return  # not signed in at all: the method's @web.authenticated answers
        hub = self.hub
        if hub is None:
            self.fail(404, "this server does not run under a JupyterHub: there is no share service")
            return
        model: dict[str, Any] = getattr(self.current_user, "hub_user", None) or {}
        if model.get("kind") != "service" or model.get("name") != hub.share_service:
            self.fail(403, f"only the Hub's {hub.share_service} service may call this route")

    def offer(self, dep: Deployment, user: str) -> ShareOffer:
        share = dep.config.share_with
        return ShareOffer(deployment=dep.id, name=dep.name, status=dep.status.value,
                          api_path=f"{endpoint_url(self.base_url, dep.route)}/v1", models=share.models or dep.models,
                          role=share.role, priority=share.priority,
                          quotas=QuotaValues.model_validate(share.quotas.model_dump()),
                          holds_key=any(t.hub_user == user for t in self.desk.holders(dep.id)))


class OffersHandler(ShareServiceHandler):
    """POST {user, groups}: the deployments shared with that Hub user."""

    @web.authenticated
    async def post(self) -> None:
        async def action() -> None:
            person = self.body(HubPersonBody)
            offers = [self.offer(d, person.user) for d in self.supervisor.list()
                      if d.config.share_with.allows(person.user, person.groups)]
            assert self.hub is not None  # (prepare answered outside a Hub)
            self.write_model(ShareOffers(owner=self.hub.owner, offers=offers))

        await self.run(action)


class SharedKeyHandler(ShareServiceHandler):
    """POST {user, groups, deployment}: a personal key for that Hub user (replacing theirs); 403 when not shared."""

    @web.authenticated
    async def post(self) -> None:
        async def action() -> None:
            body = self.body(ShareKeyRequest)
            dep = self.lookup(body.deployment)
            try:
                token, info = self.desk.mint(dep, body.user, body.groups)
            except NotShared as exc:
                raise DeploymentError(str(exc), 403) from None
            self.write_model(SharedKey(token=token, key=_token(info), offer=self.offer(dep, body.user)), 201)

        await self.run(action)


class HoldersHandler(ShareServiceHandler):
    """GET: the Hub users who hold a valid shared key on this server."""

    @web.authenticated
    async def get(self) -> None:
        self.write_model(ShareHolders(holders=self.desk.holder_names()))


class MembersHandler(ShareServiceHandler):
    """POST {members: {user: groups or null}}: the Hub's word on people; revokes whoever lost their place."""

    @web.authenticated
    async def post(self) -> None:
        async def action() -> None:
            body = self.body(HubMembers)
            revoked = self.desk.members(self.supervisor.list(), body.members)
            self.write_model(ShareCheck(revoked=[_token(t) for t in revoked], holders=self.desk.holder_names()))

        await self.run(action)


def share_handlers(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    """The sharing routes, under `prefix` (the server's base URL + api/modeldeploy)."""
    return [
        (rf"{prefix}/deployments/(?P<ref>[^/]+)/share", DeploymentShareHandler),
        (rf"{prefix}/hub-share/offers", OffersHandler),
        (rf"{prefix}/hub-share/keys", SharedKeyHandler),
        (rf"{prefix}/hub-share/holders", HoldersHandler),
        (rf"{prefix}/hub-share/members", MembersHandler),
    ]
