"""Keys teammates get through the JupyterHub share page: minted by this server, attributed to a Hub name.

The Hub's share service (`jupyter_modeldeploy.hub_share`) logs the teammate in with the Hub and asks
this server for their key, naming them and their groups; this server checks the deployment's
`share_with` and mints a key that carries its role, models, priority and quotas. Each person holds at
most one shared key per deployment: a new one replaces the old. Whoever the share no longer names
(the owner changed it, or the Hub reports them out of the group, or gone) loses their keys at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import quote

from ..config.sharing import ShareOptions
from ..gateway.tokens import Quotas, TokenInfo, TokenRegistry
from ..supervisor import Deployment

#: The name the share service has in the Hub's configuration, unless the admin chose another.
DEFAULT_SHARE_SERVICE = "modeldeploy-share"


@dataclass(frozen=True)
class HubContext:
    """This server's place in a JupyterHub: its owner, the Hub's base URL and the share service's name."""

    owner: str
    hub_base_url: str
    share_service: str

    @classmethod
    def from_environment(cls, share_service: str) -> HubContext | None:
        """The context the Hub's spawner gives a user's server; None outside a Hub."""
        owner = os.environ.get("JUPYTERHUB_USER")
        if not owner or not os.environ.get("JUPYTERHUB_API_URL"):
            return None
        return cls(owner, os.environ.get("JUPYTERHUB_BASE_URL") or "/", share_service)

    def share_path(self, dep: Deployment) -> str:
        """The path of a deployment's share page, on the Hub's public address."""
        base = self.hub_base_url.rstrip("/")
        return f"{base}/services/{quote(self.share_service)}/{quote(self.owner)}/{quote(dep.name)}"


def _models(share: ShareOptions) -> tuple[str, ...] | None:
    """The models a shared key holds, as a key stores them."""
    return tuple(dict.fromkeys(share.models)) if share.models else None


class NotShared(Exception):
    """The deployment's share does not name this person (nor any group of theirs)."""


class ShareDesk:
    """Mints, lists and revokes the keys a deployment's share gives out."""

    def __init__(self, tokens: TokenRegistry):
        self.tokens = tokens

    def holders(self, dep_id: str | None = None) -> list[TokenInfo]:
        """Valid shared keys (of one deployment, or all), oldest first."""
        return [t for t in self.tokens.list() if t.hub_user is not None and t.revoked_at is None
                and (dep_id is None or t.deployment_id == dep_id)]

    def holder_names(self) -> list[str]:
        """The Hub users holding a valid shared key, sorted."""
        return sorted({t.hub_user for t in self.holders() if t.hub_user})

    def mint(self, dep: Deployment, user: str, groups: list[str]) -> tuple[str, TokenInfo]:
        """A new key for `user` (replacing theirs); NotShared when the share does not name them."""
        share = dep.config.share_with
        if not share.allows(user, groups):
            raise NotShared(f"{dep.name} is not shared with {user}")
        for old in self.holders(dep.id):
            if old.hub_user == user:
                self.tokens.revoke(old.id)
        quotas = Quotas.from_json(share.quotas.limits())
        return self.tokens.create(deployment_id=dep.id, name=user, role=share.role, models=share.models,
                                  quotas=quotas, priority=share.priority, hub_user=user, hub_groups=groups)

    def reshare(self, dep: Deployment, share: ShareOptions) -> list[TokenInfo]:
        """Put a new share in force: the keys of whoever it no longer names (by the groups last reported) end;
        the others take its role, models, priority and quotas for their next request."""
        dep.config.share_with = share
        revoked = []
        quotas = Quotas.from_json(share.quotas.limits())
        for key in self.holders(dep.id):
            if not share.allows(key.hub_user or "", key.hub_groups or ()):
                revoked.append(self.tokens.revoke(key.id))
            elif (key.role, key.models, key.priority, key.quotas) != (share.role, _models(share), share.priority, quotas):
                self.tokens.update(key.id, role=share.role, models=share.models, all_models=share.models is None,
                                   priority=share.priority, quotas=quotas, clear_quotas=quotas is None)
        return revoked

    def members(self, deployments: list[Deployment], reported: dict[str, list[str] | None]) -> list[TokenInfo]:
        """Take the Hub's word on people's groups (None: no such user any more); revoke whoever lost their place."""
        shares = {d.id: d.config.share_with for d in deployments}
        revoked = []
        for key in self.holders():
            if key.hub_user not in reported:
                continue
            groups = reported[key.hub_user]
            share = shares.get(key.deployment_id or "")
            if groups is None or share is None or not share.allows(key.hub_user, groups):
                revoked.append(self.tokens.revoke(key.id))
            elif tuple(groups) != key.hub_groups:
                self.tokens.update(key.id, hub_groups=groups)
        return revoked
