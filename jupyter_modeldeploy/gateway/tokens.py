"""Generated API keys (tokens): scoped to one deployment or one project, a role, optionally some models.

A token is shown once, when it is created; only its hash is stored. Lookups go through an
in-memory index by hash, so checking a request costs one hash and one dict lookup, and a
revocation is seen by the very next request. The time a key was last used is kept in memory
at each request and written to the store in batches (`pending_write`), never once per request.

Roles: `inference` may call the deployment's serving API; `read` only its read routes
(health, the model list, the deployment's metrics through the gateway), no inference.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from ..keys import hash_key, new_token
from ..supervisor.signals import Signal
from ..supervisor.store import Store

Role = Literal["inference", "read"]
Priority = Literal["interactive", "batch"]  # a key's requests' class in a deployment's waiting line
ROLES: tuple[Role, ...] = ("inference", "read")
PRIORITIES: tuple[Priority, ...] = ("interactive", "batch")


@dataclass(frozen=True)
class Quotas:
    """A key's limits (None: no limit); the gateway's `QuotaBook` enforces them."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_in_flight: int | None = None
    daily_tokens: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Quotas | None:
        if not data:
            return None
        values = {k: data.get(k) for k in cls.__dataclass_fields__}
        for name, value in values.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"quota {name} must be a positive integer")
        quotas = cls(**values)
        return quotas if any(v is not None for v in values.values()) else None

    def to_json(self) -> dict[str, int | None]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


TokenChangeKind = Literal["created", "changed", "revoked", "dropped"]


@dataclass(eq=False)
class TokenInfo:
    """A token's public description (never the token itself)."""

    id: str
    name: str | None
    prefix: str
    deployment_id: str | None
    project: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    role: Role = "inference"
    models: tuple[str, ...] | None = None  # None: every model of the scope
    last_used_at: float | None = None
    quotas: Quotas | None = None
    priority: Priority = "interactive"
    hub_user: str | None = None  # a key a teammate got through the Hub's share page: their Hub name
    hub_groups: tuple[str, ...] | None = None  # and their groups, as the Hub last reported them

    def valid(self, now: float) -> bool:
        """Not revoked and not expired."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def scope(self) -> str:
        """The scope in words, for error messages: `deployment d-1`, `project p`."""
        return f"deployment {self.deployment_id}" if self.deployment_id else f"project {self.project}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "prefix": self.prefix, "deployment_id": self.deployment_id,
            "project": self.project, "created_at": self.created_at, "expires_at": self.expires_at,
            "revoked_at": self.revoked_at, "role": self.role,
            "models": list(self.models) if self.models is not None else None, "last_used_at": self.last_used_at,
            "quotas": self.quotas.to_json() if self.quotas is not None else None, "priority": self.priority,
            "hub_user": self.hub_user, "hub_groups": list(self.hub_groups) if self.hub_groups is not None else None,
        }


def _check_priority(priority: str) -> Priority:
    """A key's priority class; ValueError naming the ones there are."""
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of: {', '.join(PRIORITIES)}")
    return priority  # type: ignore[return-value]


def _from_row(row: dict[str, Any]) -> TokenInfo:
    values = {k: row.get(k) for k in TokenInfo.__dataclass_fields__}
    values["role"] = values["role"] or "inference"
    values["priority"] = values["priority"] or "interactive"
    values["models"] = tuple(values["models"]) if values["models"] is not None else None
    values["hub_groups"] = tuple(values["hub_groups"]) if values["hub_groups"] is not None else None
    try:
        values["quotas"] = Quotas.from_json(values["quotas"])
    except ValueError:
        values["quotas"] = None  # a damaged quota column: the key keeps working, without limits
    return TokenInfo(**values)


@dataclass(frozen=True)
class TokenChange:
    """What happened to a generated key (`dropped`: forgotten with its deployment)."""

    kind: TokenChangeKind
    token: TokenInfo


class TokenRegistry:
    """Creates, lists, changes, revokes and looks up tokens."""

    def __init__(self, store: Store):
        self.store = store
        self._by_hash: dict[str, TokenInfo] = {}
        self._by_id: dict[str, TokenInfo] = {}
        self._hash_of: dict[str, str] = {}
        self._used: dict[str, float] = {}  # last-used times not yet written
        # Keys created, changed, revoked or dropped with their deployment: whoever acts on it subscribes.
        self.changes: Signal[TokenChange] = Signal("key changes")
        for row in store.tokens():
            info = _from_row(row)
            self._index(row["hash"], info)

    def _index(self, digest: str, info: TokenInfo) -> None:
        self._by_hash[digest] = info
        self._by_id[info.id] = info
        self._hash_of[info.id] = digest

    def create(
        self,
        *,
        deployment_id: str | None = None,
        project: str | None = None,
        name: str | None = None,
        expires_in_s: float | None = None,
        role: Role = "inference",
        models: list[str] | None = None,
        quotas: Quotas | None = None,
        priority: Priority = "interactive",
        hub_user: str | None = None,
        hub_groups: list[str] | None = None,
    ) -> tuple[str, TokenInfo]:
        """A new token for one deployment or one project; returns (token, info)."""
        if (deployment_id is None) == (project is None):
            raise ValueError("a token is scoped to exactly one of: deployment, project")
        if expires_in_s is not None and expires_in_s <= 0:
            raise ValueError("expires_in_s must be positive")
        if role not in ROLES:
            raise ValueError(f"role must be one of: {', '.join(ROLES)}")
        if models is not None and not models:
            raise ValueError("models, when given, names at least one model")
        _check_priority(priority)
        token = new_token()
        now = time.time()
        info = TokenInfo(
            id="t-" + secrets.token_hex(4), name=name, prefix=token[:7], deployment_id=deployment_id,
            project=project, created_at=now, expires_at=now + expires_in_s if expires_in_s else None,
            revoked_at=None, role=role, models=tuple(dict.fromkeys(models)) if models else None, quotas=quotas,
            priority=priority, hub_user=hub_user, hub_groups=tuple(hub_groups) if hub_groups is not None else None,
        )
        digest = hash_key(token)
        self.store.add_token({**info.to_json(), "hash": digest})
        self._index(digest, info)
        self.changes.send(TokenChange("created", info))
        return token, info

    def list(self) -> list[TokenInfo]:
        """Every token, oldest first."""
        return sorted(self._by_id.values(), key=lambda t: t.created_at)

    def get(self, token_id: str) -> TokenInfo:
        """One token by id; KeyError when unknown."""
        return self._by_id[token_id]

    def _replace(self, info: TokenInfo, kind: TokenChangeKind, **changes: Any) -> TokenInfo:
        new = replace(info, **changes)
        self._index(self._hash_of[info.id], new)
        self.changes.send(TokenChange(kind, new))
        return new

    def update(self, token_id: str, *, name: str | None = None, expires_at: float | None = None,
               clear_expiry: bool = False, quotas: Quotas | None = None, clear_quotas: bool = False,
               priority: Priority | None = None, hub_groups: list[str] | None = None, role: Role | None = None,
               models: list[str] | None = None, all_models: bool = False) -> TokenInfo:
        """Change a token's label, expiry, quotas, priority, role or models (`all_models`: every model of its
        scope), effective for its next request, or its holder's Hub groups; KeyError when unknown."""
        info = self._by_id[token_id]
        changes: dict[str, Any] = {}
        if role is not None:
            if role not in ROLES:
                raise ValueError(f"role must be one of: {', '.join(ROLES)}")
            changes["role"] = role
        if models is not None or all_models:
            changes["models"] = tuple(dict.fromkeys(models)) if models else None
        if hub_groups is not None:
            changes["hub_groups"] = tuple(hub_groups)
        if priority is not None:
            changes["priority"] = _check_priority(priority)
        if quotas is not None or clear_quotas:
            changes["quotas"] = quotas
        if name is not None:
            changes["name"] = name
        if expires_at is not None or clear_expiry:
            changes["expires_at"] = expires_at
        new = self._replace(info, "changed", **changes)
        self.store.update_token(self._row(new))
        return new

    def _row(self, info: TokenInfo) -> dict[str, Any]:
        return {**info.to_json(), "hash": self._hash_of[info.id]}

    def revoke(self, token_id: str) -> TokenInfo:
        """Revoke a token at once; KeyError when unknown."""
        info = self._by_id[token_id]
        if info.revoked_at is None:
            now = time.time()
            self.store.revoke_token(token_id, now)
            return self._replace(info, "revoked", revoked_at=now)
        return info

    def lookup(self, token: str) -> TokenInfo | None:
        """The token's info, or None when it was never issued."""
        return self._by_hash.get(hash_key(token))

    def indexed(self) -> list[tuple[str, TokenInfo]]:
        """Every known key's hash and info (what the gateway worker admits with; never a key itself)."""
        return list(self._by_hash.items())

    def touch(self, info: TokenInfo, now: float) -> None:
        """Note that a key was just used (in memory; `pending_write` hands the write over)."""
        info.last_used_at = now
        self._used[info.id] = now

    def pending_write(self) -> Callable[[], None] | None:
        """Take the last-used times noted since the last call (on the event loop); returns the write
        to run (in a worker thread), or None when there is nothing to write."""
        if not self._used:
            return None
        used, self._used = self._used, {}
        return functools.partial(self.store.touch_tokens, used)

    def forget_deployment(self, deployment_id: str) -> None:
        """Drop the tokens of a deleted deployment from the index."""
        for digest, info in list(self._by_hash.items()):
            if info.deployment_id == deployment_id:
                del self._by_hash[digest]
                self._by_id.pop(info.id, None)
                self._hash_of.pop(info.id, None)
                self.changes.send(TokenChange("dropped", info))
