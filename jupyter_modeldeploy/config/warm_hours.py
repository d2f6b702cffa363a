"""Warm windows (`warm_hours`): the hours a deployment stays loaded whatever its idle time.

A window names weekdays and a start and end time in the Jupyter server's time zone, e.g.
`{"days": "mon-fri", "start": "09:00", "end": "18:00"}`. Inside any window the idle limit does not
stop or put to sleep, a Ray deployment keeps at least one replica, and one found asleep is woken;
outside them idle shutdown and sleep act as configured. An end at or before the start runs past
midnight into the next day (`22:00`-`06:00`); an end equal to the start is a whole day.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Sequence
from datetime import datetime

from pydantic import Field, field_validator

from .base import StrictModel

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@functools.lru_cache(maxsize=256)  # the supervisor asks every tick: a window's text is parsed once
def parse_days(text: str) -> frozenset[int]:
    """Weekdays (Monday 0) from `mon-fri`, `sat,sun`, `mon,wed-fri` or `daily`; ValueError naming what is wrong."""
    spec = text.strip().lower()
    if spec in ("daily", "every day", "*"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        if first not in DAY_NAMES or (last and last not in DAY_NAMES):
            raise ValueError(f"days {text[:60]!r}: use day names {', '.join(DAY_NAMES)}, ranges such as mon-fri, "
                             "lists such as sat,sun, or daily")
        start = DAY_NAMES.index(first)
        end = DAY_NAMES.index(last) if last else start
        span = (end - start) % 7  # fri-mon wraps over the weekend
        days.update((start + i) % 7 for i in range(span + 1))
    return frozenset(days)


@functools.lru_cache(maxsize=256)
def clock_minutes(text: str) -> int:
    """Minutes after midnight of an `HH:MM` time; ValueError when it is not one."""
    match = _CLOCK_RE.match(text.strip())
    if match is None:
        raise ValueError(f"{text[:20]!r} is not a time of day as HH:MM (00:00 to 23:59)")
    return int(match.group(1)) * 60 + int(match.group(2))


class WarmWindow(StrictModel):
    """Weekdays and hours in which the deployment stays loaded."""

    days: str = Field("mon-sun", description="weekdays: mon-fri, sat,sun, mon,wed-fri or daily")
    start: str = Field(description="HH:MM in the server's time zone")
    end: str = Field(description="HH:MM; at or before start, the window ends the next day")

    @field_validator("days")
    @classmethod
    def _days(cls, value: str) -> str:
        parse_days(value)
        return value

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        clock_minutes(value)
        return value.strip()

    def covers(self, moment: datetime) -> bool:
        """Whether `moment` (a local time) falls inside the window."""
        days = parse_days(self.days)
        minutes = moment.hour * 60 + moment.minute
        start, end = clock_minutes(self.start), clock_minutes(self.end)
        today, yesterday = moment.weekday(), (moment.weekday() - 1) % 7
        if start < end:
            return today in days and start <= minutes < end
        return (today in days and minutes >= start) or (yesterday in days and minutes < end)


def warm_now(windows: Sequence[WarmWindow], now: float | None = None) -> bool:
    """Whether any window covers `now` (epoch seconds; the present by default) in the server's time zone."""
    if not windows:
        return False  # (most deployments: no clock read at every tick)
    moment = datetime.fromtimestamp(time.time() if now is None else now).astimezone()
    return any(window.covers(moment) for window in windows)
