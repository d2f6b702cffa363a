"""Secrets out of captured bodies: known values, generated keys, and the values of secret-named JSON fields."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..keys import TOKEN_PREFIX
from ..supervisor.logbuffer import MASK

_MASK = MASK.encode()
#: A generated key anywhere in a body (`md-` and 43 URL-safe characters).
_TOKEN = re.compile(re.escape(TOKEN_PREFIX).encode() + rb"[A-Za-z0-9_-]{20,}")
#: `"api_key": "..."`, `"password":"..."`, `"authorization": "..."`: the string value of a secret-named field.
_FIELD = re.compile(
    rb'("(?:[A-Za-z0-9_-]*(?:api[_-]?key|secret|password|passwd|token|authorization|credential)[A-Za-z0-9_-]*)"\s*:\s*)'
    rb'"(?:[^"\\]|\\.)*"',
    re.IGNORECASE,
)
#: `Bearer <value>` in free text (a pasted header).
_BEARER = re.compile(rb"(Bearer\s+)[A-Za-z0-9._~+/=-]{8,}")


def redact(body: bytes, secrets: Iterable[str] = ()) -> bytes:
    """The body with every known secret, generated key and secret-named JSON string value masked.

    Token-count fields (`prompt_tokens`, `max_tokens`) hold numbers, never strings, so they stay.
    """
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        body = body.replace(secret.encode(), _MASK)
    body = _TOKEN.sub(_MASK, body)
    body = _FIELD.sub(rb'\1"' + _MASK + rb'"', body)
    return _BEARER.sub(rb"\1" + _MASK, body)
