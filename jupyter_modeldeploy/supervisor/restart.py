"""The restart policy (`restart: never | on-failure | always`) as pure functions over data.

- After a Jupyter server restart, a deployment with `always` that was serving when the old
  server went away (its engine died with it, or the server shut down) comes back by itself:
  relaunched, or parked again when it was asleep (the next request relaunches it).
- An engine that crashes (it ran, and ended without being asked) is restarted under
  `on-failure` and `always`, after a back-off that doubles with every crash in the window;
  `max_restarts` crashes within `window_s` is a crash loop: it stays `failed`, saying so.

The supervisor holds the machinery (timers, relaunches); this module only decides. A
deployment the policy does not apply to (one placed elsewhere, re-attached by its placement)
is excluded by `applies_to`, the one condition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .state import Status

#: The reason recorded for deployments stopped because the Jupyter server shut down.
SERVER_SHUTDOWN = "the Jupyter server shut down"

POLICIES = ("never", "on-failure", "always")


class Resume(str, Enum):
    """What becomes of a stored deployment when a new server loads it."""

    STOP = "stop"  # listed as stopped; the user relaunches it
    RELAUNCH = "relaunch"  # started again by itself
    PARK = "park"  # sleeping without an engine: the next request relaunches it


@dataclass(frozen=True)
class RestartLimits:
    """Back-off and crash-loop limits for restarting crashed engines."""

    base_delay_s: float = 2.0  # the first restart waits this long; each further crash doubles it
    max_delay_s: float = 60.0
    max_restarts: int = 5  # this many crashes within window_s is a crash loop
    window_s: float = 600.0


@dataclass(frozen=True)
class CrashDecision:
    """After a crash: restart after `delay_s`, or give up (`delay_s` None); `note` says which, for the reason."""

    delay_s: float | None
    note: str


def applies_to(config: Any) -> bool:
    """Whether the local restart policy governs this deployment: it runs on this host (Ray re-attaches its own)."""
    return not config.placement.on_ray


def on_server_start(policy: str, status: Status, reason: str | None) -> Resume:
    """What a new server does with a stored deployment last seen in `status` (with `reason`)."""
    if policy != "always":
        return Resume.STOP
    if status is Status.SLEEPING:
        return Resume.PARK
    was_serving = status.live and status is not Status.STOPPING
    shut_down_serving = status is Status.STOPPED and reason == SERVER_SHUTDOWN
    return Resume.RELAUNCH if was_serving or shut_down_serving else Resume.STOP


def restarts_crashes(policy: str) -> bool:
    """Whether a crashed engine is restarted under this policy."""
    return policy in ("on-failure", "always")


def after_crash(policy: str, crash_times: list[float], now: float, limits: RestartLimits) -> CrashDecision:
    """Restart or give up after a crash at `now`; `crash_times` are this deployment's crashes, `now` included."""
    recent = [t for t in crash_times if now - t <= limits.window_s]
    if len(recent) >= limits.max_restarts:
        return CrashDecision(None, f"crash loop: {len(recent)} crashes within {limits.window_s:g} s; "
                                   f"not restarting again (restart: {policy})")
    delay = min(limits.base_delay_s * 2 ** (len(recent) - 1), limits.max_delay_s)
    return CrashDecision(delay, f"restarting in {delay:g} s (restart {len(recent)} of at most "
                                f"{limits.max_restarts - 1} within {limits.window_s:g} s; restart: {policy})")


@dataclass
class CrashBook:
    """Each deployment's recent crash times (in memory: a server restart starts afresh)."""

    limits: RestartLimits = field(default_factory=RestartLimits)
    times: dict[str, list[float]] = field(default_factory=dict)

    def crashed(self, dep_id: str, policy: str, now: float) -> CrashDecision:
        """Note a crash and decide what follows."""
        kept = [t for t in self.times.get(dep_id, []) if now - t <= self.limits.window_s] + [now]
        self.times[dep_id] = kept
        return after_crash(policy, kept, now, self.limits)

    def after(self, dep_id: str, config: Any, reason: str, now: float) -> tuple[float | None, str]:
        """After a crash of a deployment's engine: the restart delay (None: no restart), and `reason` with its
        first line saying what follows (restarting in so many seconds, or a crash loop)."""
        if not applies_to(config) or not restarts_crashes(config.restart):
            return None, reason
        decision = self.crashed(dep_id, config.restart, now)
        head, _, tail = reason.partition("\n")
        return decision.delay_s, f"{head}; {decision.note}" + (f"\n{tail}" if tail else "")

    def forget(self, dep_id: str) -> None:
        """Start counting afresh (a relaunch asked for by the user)."""
        self.times.pop(dep_id, None)
