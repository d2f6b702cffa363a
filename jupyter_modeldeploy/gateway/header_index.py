"""HTTP headers as the gateway's own HTTP code receives them: every pair in order, looked up without regard to case."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class HeaderIndex:
    """Headers as received: `get` without regard to case (repeated ones joined by commas, as tornado joins them),
    and every pair in order (`get_all`)."""

    __slots__ = ("_index", "_pairs")

    def __init__(self, pairs: list[tuple[str, str]]):
        self._pairs = pairs
        index: dict[str, str] = {}
        for name, value in pairs:
            lower = name.lower()
            index[lower] = f"{index[lower]},{value}" if lower in index else value
        self._index = index

    def get(self, name: str, default: Any = None) -> Any:
        """The value of `name` (any case), or `default`."""
        return self._index.get(name.lower(), default)

    def get_all(self) -> Iterable[tuple[str, str]]:
        """Every (name, value) pair, in the order received."""
        return self._pairs

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index
