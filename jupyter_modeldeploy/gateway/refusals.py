"""The gateway's own answers: a refusal's status, message and error type, in the dialect of its route.

A TEI client reads `{"error": "...", "error_type": "..."}`, an Anthropic client `{"type": "error",
"error": {...}}` and everything else OpenAI's `{"error": {"message", "type", "code"}}`: each refusal
is written in the shape its caller's SDK can read (`refusal_document`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..engines.embedding_server.protocol import tei_error_body, tei_error_type
from ..engines.routes import Dialect

#: Anthropic's error types; another kind is mapped by status (`anthropic_error_type`).
ANTHROPIC_TYPES = frozenset({
    "invalid_request_error", "authentication_error", "permission_error", "not_found_error", "rate_limit_error",
})


@dataclass
class Refusal:
    """A request the gateway answers itself with an error."""

    status: int
    message: str
    kind: str
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    code: str | None = None  # the error's `code` (default: the status)
    close: bool = False  # the connection closes after it (a body it did not read is still coming)


def error_body(message: str, kind: str, code: str | int | None = None, **extra: Any) -> dict[str, Any]:
    """An OpenAI-style error object."""
    return {"error": {"message": message, "type": kind, "code": code, **extra}}


def anthropic_error_type(status: int, kind: str) -> str:
    """The Anthropic `error.type` for one of the gateway's refusals."""
    if kind in ANTHROPIC_TYPES:
        return kind
    if status == 413:
        return "request_too_large"
    if status == 429:
        return "rate_limit_error"
    return "api_error" if status >= 500 else "invalid_request_error"


def refusal_document(refusal: Refusal, dialect: Dialect = "openai") -> dict[str, Any]:
    """A refusal's JSON body in the dialect of the route it answers (the gateway's own answers, like
    `/health`, have no error kind and are their `extra` as it is)."""
    if not refusal.kind:
        return refusal.extra
    if dialect == "tei":
        return tei_error_body(refusal.message, tei_error_type(refusal.status))
    if dialect == "anthropic":
        return {"type": "error", "error": {"type": anthropic_error_type(refusal.status, refusal.kind),
                                           "message": refusal.message}}
    return error_body(refusal.message, refusal.kind, refusal.code or refusal.status, **refusal.extra)
