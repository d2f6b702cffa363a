"""Deployment status and the policy over it: pure functions, no processes or clocks."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """Where a deployment is in its life."""

    LOADING = "loading"
    ACTIVE = "active"
    IDLE = "idle"
    UNHEALTHY = "unhealthy"  # running, but not answering its health checks: requests get 503
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def live(self) -> bool:
        """True while an engine process is (meant to be) running."""
        return self in (Status.LOADING, Status.ACTIVE, Status.IDLE, Status.UNHEALTHY)


_ALLOWED: dict[Status, set[Status]] = {
    Status.LOADING: {Status.ACTIVE, Status.IDLE, Status.STOPPED, Status.FAILED},
    Status.ACTIVE: {Status.IDLE, Status.UNHEALTHY, Status.STOPPED, Status.FAILED},
    Status.IDLE: {Status.ACTIVE, Status.UNHEALTHY, Status.STOPPED, Status.FAILED},
    Status.UNHEALTHY: {Status.ACTIVE, Status.IDLE, Status.STOPPED, Status.FAILED},
    Status.STOPPED: {Status.LOADING},
    Status.FAILED: {Status.LOADING},
}


def can_move(current: Status, new: Status) -> bool:
    """Whether the status may move from `current` to `new`."""
    return new in _ALLOWED[current]


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
