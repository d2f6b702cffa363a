"""Which headers cross the gateway, in each direction, and the CORS answers it gives itself."""

from __future__ import annotations

import re
from collections.abc import Iterable

# RFC 9110 hop-by-hop headers, and `Expect`: the gateway itself answers a client's
# `Expect: 100-continue`, so the engine never sends an interim answer the client did not ask of it.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "host", "content-length", "expect",
})
# Credentials are the gateway's to check, never the engine's to see; Accept-Encoding is
# dropped so answers come uncompressed and usage can be read; forwarding headers would let a
# caller pose as another client in the engine's logs.
NOT_FORWARDED = HOP_BY_HOP | frozenset({
    "authorization", "x-api-key", "cookie", "x-xsrftoken", "accept-encoding", "origin",
    "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "x-real-ip",
})
NOT_RETURNED = (HOP_BY_HOP - {"content-length"}) | frozenset({"set-cookie", "server", "date"})
CORS_ALLOW_HEADERS = "Authorization, Content-Type, X-Api-Key, Accept, OpenAI-Organization, OpenAI-Project"
CORS_MAX_AGE_S = "600"
HEADER_NAME_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")


def request_headers(received: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The client's headers the engine may see (also dropping those its `Connection` header names)."""
    pairs = list(received)
    named = {
        token.strip().lower() for name, value in pairs if name.lower() == "connection" for token in value.split(",")
    }
    return [(name, value) for name, value in pairs if name.lower() not in NOT_FORWARDED and name.lower() not in named]


def returned_header(name: str) -> bool:
    """Whether an engine's response header goes back to the client (the gateway owns CORS)."""
    lower = name.lower()
    return lower not in NOT_RETURNED and not lower.startswith("access-control-")


def origin_allowed(origin: str, allowed: list[str]) -> bool:
    """Whether a browser origin may call the endpoint ('*' allows any)."""
    return "*" in allowed or origin in allowed


def cors_headers(origin: str | None, allowed: list[str]) -> dict[str, str]:
    """Headers that let a browser page of an allowed origin read the answer (keys, not cookies)."""
    if not origin or not origin_allowed(origin, allowed):
        return {}
    headers = {"Access-Control-Allow-Origin": "*" if "*" in allowed else origin, "Access-Control-Expose-Headers": "*"}
    if "*" not in allowed:
        headers["Vary"] = "Origin"
    return headers


def preflight_headers(origin: str, allowed: list[str], requested_headers: str | None) -> dict[str, str]:
    """The answer to a CORS preflight from an allowed origin."""
    headers = cors_headers(origin, allowed)
    headers.update({
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        # Echo the requested names only when they are a plain list of header names.
        "Access-Control-Allow-Headers": requested_headers
        if requested_headers and len(requested_headers) < 2048 and HEADER_NAME_LIST.match(requested_headers)
        else CORS_ALLOW_HEADERS,
        "Access-Control-Max-Age": CORS_MAX_AGE_S,
    })
    return headers


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key from `Authorization: Bearer ...` or `x-api-key`."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None
