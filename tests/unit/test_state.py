"""Status policy: transitions, serving status, the idle decision and failure reasons."""

from __future__ import annotations

import pytest

from jupyter_modeldeploy.supervisor.state import (
    TRANSITIONS,
    Event,
    InvalidTransition,
    Status,
    can_move,
    failure_reason,
    idle_limit_reached,
    serving_status,
    transition,
)


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        (Status.LOADING, Status.ACTIVE, True),
        (Status.ACTIVE, Status.IDLE, True),
        (Status.IDLE, Status.ACTIVE, True),
        (Status.IDLE, Status.STOPPING, True),
        (Status.STOPPING, Status.STOPPED, True),
        (Status.IDLE, Status.STOPPED, False),  # through stopping
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
    assert {s for s in Status if not s.live} == {Status.STOPPED, Status.FAILED}
    assert {s for s in Status if s.serving} == {Status.ACTIVE, Status.IDLE, Status.SLEEPING, Status.WAKING}


@pytest.mark.parametrize(
    ("state", "event", "after"),
    [
        (Status.STOPPED, Event.LAUNCH, Status.LOADING),
        (Status.FAILED, Event.LAUNCH, Status.LOADING),
        (Status.LOADING, Event.READY, Status.ACTIVE),
        (Status.LOADING, Event.CRASHED, Status.FAILED),
        (Status.LOADING, Event.STOP, Status.STOPPING),
        (Status.ACTIVE, Event.QUIET, Status.IDLE),
        (Status.IDLE, Event.BUSY, Status.ACTIVE),
        (Status.ACTIVE, Event.PROBE_FAILED, Status.UNHEALTHY),
        (Status.UNHEALTHY, Event.PROBE_OK, Status.ACTIVE),
        (Status.UNHEALTHY, Event.STOP, Status.STOPPING),
        (Status.IDLE, Event.SLEPT, Status.SLEEPING),
        (Status.SLEEPING, Event.WAKE, Status.WAKING),
        (Status.WAKING, Event.WOKE, Status.ACTIVE),
        (Status.SLEEPING, Event.LAUNCH, Status.LOADING),
        (Status.STOPPING, Event.PARKED, Status.SLEEPING),
        (Status.STOPPING, Event.EXITED, Status.STOPPED),
        (Status.STOPPING, Event.CRASHED, Status.FAILED),
        (Status.WAKING, Event.CRASHED, Status.FAILED),
        (Status.STOPPED, Event.STOP, Status.STOPPED),
    ],
)
def test_transition_table(state: Status, event: Event, after: Status) -> None:
    assert transition(state, event) is after


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (Status.STOPPED, Event.READY), (Status.ACTIVE, Event.SLEPT), (Status.SLEEPING, Event.PROBE_FAILED),
        (Status.LOADING, Event.QUIET), (Status.STOPPED, Event.CRASHED), (Status.FAILED, Event.WAKE),
        (Status.ACTIVE, Event.LAUNCH), (Status.STOPPING, Event.READY), (Status.UNHEALTHY, Event.BUSY),
    ],
)
def test_events_a_state_does_not_take(state: Status, event: Event) -> None:
    with pytest.raises(InvalidTransition, match=state.value):
        transition(state, event)


def test_every_state_is_reachable_and_can_end() -> None:
    reachable, frontier = {Status.STOPPED}, [Status.STOPPED]
    while frontier:
        for after in TRANSITIONS[frontier.pop()].values():
            if after not in reachable:
                reachable.add(after)
                frontier.append(after)
    assert reachable == set(Status)
    for state in Status:
        if state.live:
            assert Status.STOPPING in TRANSITIONS[state].values() or state is Status.STOPPING


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
