"""Warm windows: which weekdays and times they cover, and what a wrong one is told."""

from __future__ import annotations

from datetime import datetime

import pytest

from jupyter_modeldeploy.config import ConfigError, parse_config
from jupyter_modeldeploy.config.warm_hours import WarmWindow, parse_days, warm_now

# 2026-12-07 is a Monday.
MON, FRI, SAT, SUN = 7, 11, 12, 13


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute)


def test_day_specs() -> None:
    assert parse_days("mon-fri") == {0, 1, 2, 3, 4}
    assert parse_days("sat,sun") == {5, 6}
    assert parse_days("mon,wed-fri") == {0, 2, 3, 4}
    assert parse_days("fri-mon") == {4, 5, 6, 0}  # over the weekend
    assert parse_days("daily") == set(range(7))


def test_office_hours_cover_weekdays_from_start_to_before_end() -> None:
    window = WarmWindow(days="mon-fri", start="09:00", end="18:00")
    assert window.covers(at(MON, 9)) and window.covers(at(FRI, 17, 59))
    assert not window.covers(at(MON, 8, 59)) and not window.covers(at(MON, 18))
    assert not window.covers(at(SAT, 12))


def test_a_night_window_runs_past_midnight_into_the_next_day() -> None:
    window = WarmWindow(days="fri", start="22:00", end="06:00")
    assert window.covers(at(FRI, 23)) and window.covers(at(SAT, 5, 59))
    assert not window.covers(at(SAT, 6)) and not window.covers(at(SAT, 23)) and not window.covers(at(SUN, 3))


def test_an_end_equal_to_the_start_is_a_whole_day() -> None:
    window = WarmWindow(days="daily", start="00:00", end="00:00")
    assert all(window.covers(at(day, hour)) for day in (MON, SAT) for hour in (0, 12, 23))


def test_warm_now_reads_the_servers_time_zone() -> None:
    window = WarmWindow(days="mon", start="09:00", end="10:00")
    assert warm_now([window], at(MON, 9, 30).timestamp())
    assert not warm_now([window], at(MON, 10, 30).timestamp()) and not warm_now([], at(MON, 9, 30).timestamp())


@pytest.mark.parametrize(("window", "message"), [
    ({"days": "weekdays", "start": "09:00", "end": "18:00"}, "use day names"),
    ({"days": "mon", "start": "9", "end": "18:00"}, "'9' is not a time of day as HH:MM"),
    ({"days": "mon", "start": "09:00", "end": "24:00"}, "'24:00' is not a time of day"),
    ({"days": "mon", "start": "09:00"}, "end"),
])
def test_a_wrong_window_is_refused_naming_what_is_wrong(window: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"kind": "llamacpp", "name": "a", "model": "/m.gguf", "warm_hours": [window]})
    assert message in str(refused.value)
