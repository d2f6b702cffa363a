"""Who may call a deployment's endpoint: pure decisions over the presented key.

`authorize` decides from the headers (key, deployment, project); `role_refusal` from the method
once the route is known (a `read` key only reads); `model_refusal` once the model is chosen (a key
scoped to some models). Each refusal names the scope that refused it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..keys import key_matches
from .headers import presented_key
from .tokens import TokenInfo

__all__ = ["AuthDecision", "authorize", "model_refusal", "presented_key", "role_refusal"]


@dataclass(frozen=True)
class AuthDecision:
    """The outcome: allowed, or the HTTP status and message to answer with."""

    allowed: bool
    status: int = 200
    message: str = ""
    token_id: str | None = None


READ_METHODS = frozenset({"GET", "HEAD"})


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
    return AuthDecision(False, 403, f"this key is not valid for this deployment (it is scoped to {token.scope()})")


def role_refusal(token: TokenInfo | None, method: str) -> AuthDecision | None:
    """A `read` key may only read (GET, HEAD): health, the model list, metrics; never inference."""
    if token is None or token.role != "read" or method in READ_METHODS:
        return None
    return AuthDecision(False, 403, f"this key's role is 'read': it may not {method} here (inference needs an "
                                    "'inference' key)")


def model_refusal(token: TokenInfo | None, model: str | None) -> AuthDecision | None:
    """A key scoped to some models may call those only (a request that names none is refused too)."""
    if token is None or token.models is None or (model is not None and model in token.models):
        return None
    allowed = ", ".join(token.models)
    if model is None:
        return AuthDecision(False, 403, f"this key is scoped to the models {allowed}: name one in the request")
    return AuthDecision(False, 403, f"this key is scoped to the models {allowed}, not {model[:200]!r}")
