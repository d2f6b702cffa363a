"""The gateway's own answers: a refusal's status, message and error type, as OpenAI-style JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .response_head import json_answer


@dataclass
class Refusal:
    """A request the gateway answers itself with an error."""

    status: int
    message: str
    kind: str
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    code: str | None = None  # the error's `code` (default: the status)


def error_body(message: str, kind: str, code: str | int | None = None, **extra: Any) -> dict[str, Any]:
    """An OpenAI-style error object."""
    return {"error": {"message": message, "type": kind, "code": code, **extra}}


def relay_refusal(outcome: dict[str, Any]) -> Refusal | None:
    """The answer to a request the relay worker could not send to its engine (nothing was written);
    None when the engine answered."""
    kind = outcome.get("outcome")
    if kind in ("unreachable", "error"):
        return Refusal(502, f"the engine could not be reached: {outcome.get('message')}", "upstream_error")
    if kind == "timeout":
        return Refusal(504, f"the engine did not answer: {outcome.get('message')}", "timeout_error")
    return None


def refusal_answer(refusal: Refusal, cors: dict[str, str], *, keep_alive: bool) -> bytes:
    """A refusal as a whole HTTP answer, for a connection out of tornado's hands."""
    document = error_body(refusal.message, refusal.kind, refusal.code or refusal.status, **refusal.extra)
    return json_answer(refusal.status, document, {**cors, **refusal.headers}, keep_alive=keep_alive)
