"""Time series in bounded ring buffers sharing one time axis."""

from __future__ import annotations

import bisect
from collections import deque
from typing import Any


class SeriesTable:
    """Several named series sampled together: one timestamp column, one value column each.

    Every column is a deque of the same maximum length, so memory stays bounded however long
    the server runs.
    """

    def __init__(self, window: int):
        self.window = window
        self.t: deque[float] = deque(maxlen=window)
        self.columns: dict[str, deque[float | None]] = {}

    def append(self, at: float, values: dict[str, float | None]) -> None:
        """Add one row; a column seen for the first time is back-filled with None."""
        for name in values:
            if name not in self.columns:
                self.columns[name] = deque([None] * len(self.t), maxlen=self.window)
        self.t.append(at)
        for name, column in self.columns.items():
            column.append(values.get(name))
        # A column nothing fills any more (a replica gone) leaves once its last value left the window.
        for name in [n for n in self.columns if n not in values and not any(v is not None for v in self.columns[n])]:
            del self.columns[name]

    def since(self, since: float | None = None) -> dict[str, Any]:
        """Rows with a timestamp after `since` (all rows when None), as JSON-ready lists."""
        times = list(self.t)
        start = 0 if since is None else bisect.bisect_right(times, since)
        return {
            "t": times[start:],
            "series": {name: list(column)[start:] for name, column in self.columns.items()},
        }

    def last(self, name: str) -> float | None:
        """The newest value of a column."""
        column = self.columns.get(name)
        return column[-1] if column else None
