"""The Date header of the gateway's answers, formatted once a second."""

from __future__ import annotations

import time
from email.utils import formatdate

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
