"""An HTTP/1.1 response head written straight to a client's socket (where tornado no longer owns it)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

NO_BODY_STATUSES = frozenset({204, 304})
FORBIDDEN_IN_HEADERS = ("\r", "\n", "\x00")


class HeaderRefused(ValueError):
    """A header name or value that cannot be written as it is."""


_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """The Date header's value for now, formatted once a second (email.utils takes microseconds a call)."""
    global _date_cache
    now = int(time.time())
    second, text = _date_cache
    if second != now:
        text = formatdate(now, usegmt=True)
        _date_cache = (now, text)
    return text


def reason_of(status: int) -> str:
    """The standard reason phrase of a status."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def render_head(status: int, reason: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """Status line and headers, with a Date; refuses a name or value that would split the head."""
    lines = [f"HTTP/1.1 {status} {reason or reason_of(status)}"]
    for name, value in headers:
        if any(c in name or c in value for c in FORBIDDEN_IN_HEADERS) or not name:
            raise HeaderRefused(f"header {name[:100]!r} cannot be passed on")
        lines.append(f"{name}: {value}")
    lines.append(f"Date: {http_date()}")
    for c in reason:
        if c in FORBIDDEN_IN_HEADERS:
            raise HeaderRefused("the status reason cannot be passed on")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="replace")


def json_answer(status: int, document: dict[str, Any], headers: dict[str, str], *, keep_alive: bool) -> bytes:
    """A whole JSON answer (the gateway's own errors once the connection is out of tornado's hands)."""
    body = json.dumps(document).encode()
    pairs = [*headers.items(), ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if not keep_alive:
        pairs.append(("Connection", "close"))
    return render_head(status, reason_of(status), pairs) + body


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
