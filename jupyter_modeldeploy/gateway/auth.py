"""Who may call a deployment's endpoint: a pure decision over the presented key."""

from __future__ import annotations

from dataclasses import dataclass

from ..supervisor.keys import key_matches
from ..supervisor.tokens import TokenInfo


@dataclass(frozen=True)
class AuthDecision:
    """The outcome: allowed, or the HTTP status and message to answer with."""

    allowed: bool
    status: int = 200
    message: str = ""
    token_id: str | None = None


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key from `Authorization: Bearer ...` or `x-api-key`."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None


def authorize(
    key: str | None,
    *,
    deployment_id: str,
    project: str,
    public: bool,
    api_key_hash: str | None,
    token: TokenInfo | None,
    now: float,
) -> AuthDecision:
    """Decide a request: public deployments need no key; else the fixed key or a scoped token."""
    if public:
        return AuthDecision(True)
    if key is None:
        return AuthDecision(False, 401, "missing API key: send 'Authorization: Bearer <key>'")
    if key_matches(key, api_key_hash):
        return AuthDecision(True)
    if token is None or not token.valid(now):
        return AuthDecision(False, 401, "invalid API key")
    if token.deployment_id == deployment_id or (token.deployment_id is None and token.project == project):
        return AuthDecision(True, token_id=token.id)
    return AuthDecision(False, 403, "this key is not valid for this deployment")
