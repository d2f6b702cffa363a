"""Generated API tokens: scoped to one deployment or one project, optionally expiring.

A token is shown once, when it is created; only its hash is stored. Lookups go through an
in-memory index by hash, so checking a request costs one hash and one dict lookup.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from .keys import hash_key, new_token
from .store import Store


@dataclass(frozen=True)
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

    def valid(self, now: float) -> bool:
        """Not revoked and not expired."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "prefix": self.prefix, "deployment_id": self.deployment_id,
            "project": self.project, "created_at": self.created_at, "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
        }


class TokenRegistry:
    """Creates, lists, revokes and looks up tokens."""

    def __init__(self, store: Store):
        self.store = store
        self._by_hash: dict[str, TokenInfo] = {}
        self._by_id: dict[str, TokenInfo] = {}
        for row in store.tokens():
            info = TokenInfo(**{k: row[k] for k in TokenInfo.__dataclass_fields__})
            self._by_hash[row["hash"]] = info
            self._by_id[info.id] = info

    def create(
        self,
        *,
        deployment_id: str | None = None,
        project: str | None = None,
        name: str | None = None,
        expires_in_s: float | None = None,
    ) -> tuple[str, TokenInfo]:
        """A new token for one deployment or one project; returns (token, info)."""
        if (deployment_id is None) == (project is None):
            raise ValueError("a token is scoped to exactly one of: deployment, project")
        if expires_in_s is not None and expires_in_s <= 0:
            raise ValueError("expires_in_s must be positive")
        token = new_token()
        now = time.time()
        info = TokenInfo(
            id="t-" + secrets.token_hex(4), name=name, prefix=token[:7], deployment_id=deployment_id,
            project=project, created_at=now, expires_at=now + expires_in_s if expires_in_s else None,
            revoked_at=None,
        )
        digest = hash_key(token)
        self.store.add_token({**info.to_json(), "hash": digest})
        self._by_hash[digest] = info
        self._by_id[info.id] = info
        return token, info

    def list(self) -> list[TokenInfo]:
        """Every token, oldest first."""
        return sorted(self._by_id.values(), key=lambda t: t.created_at)

    def revoke(self, token_id: str) -> TokenInfo:
        """Revoke a token at once; KeyError when unknown."""
        info = self._by_id[token_id]
        if info.revoked_at is None:
            now = time.time()
            self.store.revoke_token(token_id, now)
            revoked = TokenInfo(**{**info.__dict__, "revoked_at": now})
            self._by_id[token_id] = revoked
            for digest, other in self._by_hash.items():
                if other.id == token_id:
                    self._by_hash[digest] = revoked
            return revoked
        return info

    def lookup(self, token: str) -> TokenInfo | None:
        """The token's info, or None when it was never issued."""
        return self._by_hash.get(hash_key(token))

    def forget_deployment(self, deployment_id: str) -> None:
        """Drop the tokens of a deleted deployment from the index."""
        for digest, info in list(self._by_hash.items()):
            if info.deployment_id == deployment_id:
                del self._by_hash[digest]
                self._by_id.pop(info.id, None)
