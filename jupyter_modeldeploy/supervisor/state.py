"""The life of a deployment as one explicit state machine: pure, no processes or clocks.

Every state a deployment can be in is a `Status` (in the record, the store, the REST API and
every view); every change is an `Event` applied through `transition()`, whose table is the one
place that says which changes exist. The supervisor fires events; it keeps no flags beside.

    stopped/failed --launch--> loading --ready--> active <--busy/quiet--> idle
    active/idle --probe_failed--> unhealthy --probe_ok--> active
    idle --slept--> sleeping --wake--> waking --woke--> active     (engine asleep, memory freed)
    stopping --parked--> sleeping --launch--> loading               (stopped to free memory; the
                                                                      next request relaunches it)
    any running state --stop--> stopping --exited--> stopped;  --crashed--> failed
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """Where a deployment is in its life."""

    STOPPED = "stopped"
    LOADING = "loading"  # the engine is starting: planning, downloading, loading weights
    ACTIVE = "active"  # serving, with a request in flight or a recent one
    IDLE = "idle"  # serving, no request for the report interval
    UNHEALTHY = "unhealthy"  # running, but not answering its health checks: requests get 503
    SLEEPING = "sleeping"  # memory freed while idle; the next request wakes (or relaunches) it
    WAKING = "waking"  # coming back from sleep for a request that waits
    STOPPING = "stopping"  # asked to stop: the engine is being terminated
    FAILED = "failed"

    @property
    def live(self) -> bool:
        """True while the deployment holds its name and route as a running one (not stopped or failed)."""
        return self not in (Status.STOPPED, Status.FAILED)

    @property
    def answering(self) -> bool:
        """True when the engine answers this moment, without waking (active or idle)."""
        return self in (Status.ACTIVE, Status.IDLE)

    @property
    def serving(self) -> bool:
        """True when a request is answered now or after a wake-up (the gateway forwards or wakes)."""
        return self in (Status.ACTIVE, Status.IDLE, Status.SLEEPING, Status.WAKING)


class Event(str, Enum):
    """What happened to a deployment."""

    LAUNCH = "launch"  # start (or relaunch) the engine
    READY = "ready"  # its health check answered for the first time
    BUSY = "busy"  # a request is in flight, or one ended within the report interval
    QUIET = "quiet"  # no request for the report interval
    PROBE_FAILED = "probe_failed"  # health checks missed in a row while serving
    PROBE_OK = "probe_ok"  # an unhealthy engine answered again
    SLEPT = "slept"  # the engine went to sleep (its memory freed, the process kept)
    PARKED = "parked"  # the engine was stopped to free memory; a request relaunches it
    WAKE = "wake"  # a request arrived for a sleeping engine
    WOKE = "woke"  # the engine is awake again
    STOP = "stop"  # a stop was asked (user, idle limit, shutdown, a hung engine)
    EXITED = "exited"  # the engine ended after a stop
    CRASHED = "crashed"  # the engine ended without being asked, or could not start


class InvalidTransition(ValueError):
    """An event that the current state does not take."""


RUNNING = (Status.LOADING, Status.ACTIVE, Status.IDLE, Status.UNHEALTHY, Status.SLEEPING, Status.WAKING)

TRANSITIONS: dict[Status, dict[Event, Status]] = {
    Status.STOPPED: {Event.LAUNCH: Status.LOADING},
    Status.FAILED: {Event.LAUNCH: Status.LOADING},
    Status.LOADING: {Event.READY: Status.ACTIVE},
    Status.ACTIVE: {Event.BUSY: Status.ACTIVE, Event.QUIET: Status.IDLE, Event.PROBE_FAILED: Status.UNHEALTHY},
    Status.IDLE: {
        Event.BUSY: Status.ACTIVE, Event.QUIET: Status.IDLE, Event.PROBE_FAILED: Status.UNHEALTHY,
        Event.SLEPT: Status.SLEEPING,
    },
    Status.UNHEALTHY: {Event.PROBE_OK: Status.ACTIVE},
    Status.SLEEPING: {Event.WAKE: Status.WAKING, Event.LAUNCH: Status.LOADING},
    Status.WAKING: {Event.WOKE: Status.ACTIVE},
    Status.STOPPING: {Event.EXITED: Status.STOPPED, Event.PARKED: Status.SLEEPING},
}
for _state in RUNNING:
    TRANSITIONS[_state].update({Event.STOP: Status.STOPPING, Event.CRASHED: Status.FAILED})
TRANSITIONS[Status.STOPPING][Event.CRASHED] = Status.FAILED
TRANSITIONS[Status.STOPPED][Event.STOP] = Status.STOPPED  # stopping what is stopped changes nothing
TRANSITIONS[Status.FAILED][Event.STOP] = Status.FAILED


def transition(state: Status, event: Event) -> Status:
    """The state after `event`; InvalidTransition when `state` does not take it."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise InvalidTransition(f"a {state.value} deployment does not take {event.value!r}") from None


def can_move(current: Status, new: Status) -> bool:
    """Whether some event moves the status from `current` to `new`."""
    return new in TRANSITIONS[current].values()


def serving_status(*, in_flight: int, last_activity: float, now: float, report_interval_s: float) -> Status:
    """ACTIVE while a request is in flight or one ended within the report interval, else IDLE."""
    if in_flight > 0 or now - last_activity < report_interval_s:
        return Status.ACTIVE
    return Status.IDLE


def idle_limit_reached(*, in_flight: int, last_activity: float, now: float, limit_s: float) -> bool:
    """Whether an engine should stop for idleness.

    The clock runs from the end of the last request; it never fires while one is in flight,
    and a limit of 0 means never.
    """
    if limit_s <= 0 or in_flight > 0:
        return False
    return now - last_activity >= limit_s


def failure_reason(exit_code: int | None, last_lines: list[str], *, during: str) -> str:
    """A one-paragraph reason for a failed engine: how it ended and its last log lines."""
    if exit_code is None:
        how = "the engine did not start"
    elif exit_code < 0 or exit_code > 128:
        signal_no = -exit_code if exit_code < 0 else exit_code - 128
        how = f"the engine was killed by signal {signal_no}"
    else:
        how = f"the engine exited with code {exit_code}"
    reason = f"{how} while {during}"
    tail = [line for line in last_lines if line.strip()][-8:]
    if tail:
        reason += ":\n" + "\n".join(tail)
    return reason
