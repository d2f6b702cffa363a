"""Request bodies as JSON, safely: a nesting limit, finite numbers only, one error type.

`json.loads` recurses once per nesting level, so a body of 100 000 `[` raises RecursionError
(a 500); and it accepts `Infinity`/`NaN` (and `1e999` overflows to infinity), which the
server would store and later write back as text that is not JSON. Both are refused here,
before any handler sees the data, with the field named where there is one.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 32
ROOT = "(root)"

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


class BodyError(Exception):
    """A request body the API refuses: HTTP status, a one-line message, the fields at fault."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]]):
        super().__init__(message)
        self.status = status
        self.errors = errors


def nesting_depth(body: bytes, limit: int) -> int:
    """How deep arrays and objects nest in a JSON text (counting stops past `limit`)."""
    depth = peak = 0
    for match in _BRACKETS.finditer(_STRINGS.sub(b'""', body)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > peak:
                peak = depth
                if peak > limit:
                    break
        else:
            depth -= 1
    return peak


def _non_finite(text: str) -> float:
    return float(text)  # NaN, Infinity, -Infinity: found by the walk below, which names the field


def _bad_number(value: Any, path: list[str]) -> list[str] | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _bad_number(item, [*path, str(key)])
        if found is not None:
            return found
    return None


def parse_json(body: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of a request body (an empty body is `{}`); BodyError when refused."""
    if not body.strip():
        return {}
    if nesting_depth(body, max_depth) > max_depth:
        message = f"the request body nests arrays and objects deeper than {max_depth} levels"
        raise BodyError(400, message, [{"field": ROOT, "message": message}])
    try:
        data = json.loads(body, parse_constant=_non_finite)
    except (ValueError, RecursionError) as exc:
        message = f"the request body is not valid JSON: {exc}"
        raise BodyError(400, message, [{"field": ROOT, "message": message}]) from None
    path = _bad_number(data, [])
    if path is not None:
        field = ".".join(path) or ROOT
        message = "must be a finite number (JSON has no Infinity or NaN)"
        raise BodyError(400, f"{field}: {message}", [{"field": field, "message": message}])
    return data
