"""Status policy: transitions, serving status, the idle decision and failure reasons."""

from __future__ import annotations

import pytest

from jupyter_modeldeploy.supervisor.state import (
    Status,
    can_move,
    failure_reason,
    idle_limit_reached,
    serving_status,
)


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        (Status.LOADING, Status.ACTIVE, True),
        (Status.ACTIVE, Status.IDLE, True),
        (Status.IDLE, Status.ACTIVE, True),
        (Status.IDLE, Status.STOPPED, True),
        (Status.LOADING, Status.FAILED, True),
        (Status.STOPPED, Status.LOADING, True),
        (Status.FAILED, Status.LOADING, True),
        (Status.STOPPED, Status.ACTIVE, False),
        (Status.FAILED, Status.IDLE, False),
        (Status.STOPPED, Status.FAILED, False),
    ],
)
def test_transitions(current: Status, new: Status, allowed: bool) -> None:
    assert can_move(current, new) is allowed


def test_live_statuses() -> None:
    assert {s for s in Status if s.live} == {Status.LOADING, Status.ACTIVE, Status.IDLE, Status.UNHEALTHY}


def test_serving_status_active_while_in_flight_or_recent() -> None:
    assert serving_status(in_flight=1, last_activity=0, now=1000, report_interval_s=30) is Status.ACTIVE
    assert serving_status(in_flight=0, last_activity=990, now=1000, report_interval_s=30) is Status.ACTIVE
    assert serving_status(in_flight=0, last_activity=900, now=1000, report_interval_s=30) is Status.IDLE


def test_idle_limit_counts_from_last_request_end_and_never_in_flight() -> None:
    assert idle_limit_reached(in_flight=0, last_activity=0, now=3600, limit_s=3600)
    assert not idle_limit_reached(in_flight=0, last_activity=1, now=3600, limit_s=3600)
    assert not idle_limit_reached(in_flight=1, last_activity=0, now=10**6, limit_s=3600)
    assert not idle_limit_reached(in_flight=0, last_activity=0, now=10**6, limit_s=0), "0 means never"


def test_failure_reason_names_exit_and_last_lines() -> None:
    reason = failure_reason(1, ["", "loading model", "error: bad magic"], during="loading")
    assert reason.startswith("the engine exited with code 1 while loading")
    assert reason.endswith("loading model\nerror: bad magic")
    assert "signal 9" in failure_reason(137, [], during="serving")
    assert "signal 15" in failure_reason(-15, [], during="serving")
    assert failure_reason(None, [], during="loading").startswith("the engine did not start")
