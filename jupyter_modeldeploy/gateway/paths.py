"""One normalised form of a request path, used both to match the allow-list and to forward.

A path is taken as the client sent it (never decoded by the web framework and re-encoded):
percent-escapes of unreserved characters are decoded (RFC 3986 says they are the same
path), every other escape (`%2F`, `%3F`, `%23`, `%25`, `%0D%0A`, non-ASCII bytes...) and
every character outside RFC 3986's path characters is refused, as are dot segments and
empty segments. What passes holds only characters that mean the same to every HTTP server,
so the engine routes exactly the string the gateway matched.
"""

from __future__ import annotations

import re
import string

UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
SUB_DELIMS = frozenset("!$&'()*+,;=")
PATH_CHARS = UNRESERVED | SUB_DELIMS | frozenset(":@/")
QUERY_CHARS = PATH_CHARS | frozenset("?%")
HEX = frozenset(string.hexdigits)


def _only(chars: frozenset[str]) -> re.Pattern[str]:
    return re.compile("[" + re.escape("".join(sorted(chars))) + "]*")


# Paths and queries as clients send them nearly always: no escape, only allowed characters (no per-character walk).
_PLAIN_PATH = _only(PATH_CHARS)
_PLAIN_QUERY = _only(QUERY_CHARS - {"%"})


class PathError(ValueError):
    """A path or query the gateway refuses (400); the message says what is wrong."""


def _describe(char: str) -> str:
    if char == " ":
        return "a space"
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return f"control character {ord(char):#04x}"
    if ord(char) > 0x7F:
        return "a non-ASCII character"
    return repr(char)


def _escape_at(raw: str, i: int, where: str) -> str:
    """The two hex digits of the percent-escape at `raw[i]`, or PathError for a malformed one."""
    pair = raw[i + 1 : i + 3]
    if len(pair) != 2 or not set(pair) <= HEX:
        raise PathError(f"malformed percent-escape {raw[i:i + 3]!r} in the {where}")
    return pair


def normalise_path(raw: str) -> str:
    """The path in its one normal form (starting with '/'), or PathError naming the problem."""
    if not raw:
        return "/"
    if not raw.startswith("/"):
        raise PathError("the path must start with '/'")
    return _segments_checked(raw if _PLAIN_PATH.fullmatch(raw) else _unescaped(raw))


def _unescaped(raw: str) -> str:
    """The path with escapes of unreserved characters decoded; PathError for any other escape or character."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "%":
            pair = _escape_at(raw, i, "path")
            decoded = chr(int(pair, 16))
            if decoded not in UNRESERVED:
                raise PathError(f"the escape %{pair.upper()} ({_describe(decoded)}) is not allowed in a path")
            out.append(decoded)
            i += 3
            continue
        if char not in PATH_CHARS:
            raise PathError(f"{_describe(char)} is not allowed in a path")
        out.append(char)
        i += 1
    return "".join(out)


def _segments_checked(path: str) -> str:
    """The path without its trailing slash; PathError for empty or dot segments."""
    segments = path.split("/")[1:]
    if segments and segments[-1] == "":
        segments.pop()  # one trailing slash names the same resource
    for segment in segments:
        if segment == "":
            raise PathError("empty path segments ('//') are not allowed")
        if segment in (".", ".."):
            raise PathError("dot segments ('.' and '..') are not allowed in a path")
    return "/" + "/".join(segments)


def check_query(raw: str) -> str:
    """The query string as received, if every character is allowed in one; else PathError.

    A query is data for the engine, so valid percent-escapes stay as they are.
    """
    return raw if _PLAIN_QUERY.fullmatch(raw) else _walked_query(raw)


def _walked_query(raw: str) -> str:
    """`check_query` a character at a time: the escapes checked, PathError naming the first wrong character."""
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "%":
            _escape_at(raw, i, "query")
            i += 3
            continue
        if char not in QUERY_CHARS:
            raise PathError(f"{_describe(char)} is not allowed in a query")
        i += 1
    return raw
