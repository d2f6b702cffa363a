"""The idle limit (`idle_time_limit_hours`): when it is reached (the supervisor's ticker asks), and what
then frees the memory. Inside a warm window (`warm_hours`) it is never reached.

Without Universal Memory (`cpu_offload` / `disk_swap`), or on Ray (where `replicas.min: 0` frees it),
the deployment stops. With it, an engine that can sleep (vLLM's sleep mode) is put to sleep and the
next request wakes it (`Run.wake`); one that cannot is stopped as parked: `sleeping` with no engine,
its run a `ParkedRun` (`parked_run.py`) that the next request relaunches.
"""

from __future__ import annotations

from ..config.warm_hours import warm_now
from .deployment import Deployment
from .run import DeploymentHost
from .state import Event, Status, idle_limit_reached


def limit_reason(dep: Deployment, now: float) -> str | None:
    """Why the deployment's idle limit is reached at `now` (its reason to record), or None while it is not."""
    cfg = dep.config
    if not idle_limit_reached(in_flight=dep.in_flight, last_activity=dep.last_activity_at, now=now,
                              limit_s=cfg.idle_time_limit_s) or warm_now(cfg.warm_hours, now):
        return None
    return f"idle for {now - dep.last_activity_at:.0f} s (idle_time_limit_hours={cfg.idle_time_limit_hours:g})"


def warm_window_began(dep: Deployment, now: float) -> bool:
    """Whether a warm window began since the last tick (or is on at the first one); the deployment remembers."""
    warm = warm_now(dep.config.warm_hours, now)
    began, dep.warm = warm and not dep.warm, warm
    return began


async def warm_up(host: DeploymentHost, dep: Deployment) -> None:
    """A warm window began with the deployment asleep: woken now, not by the first request (once a window: a wake
    that fails is not tried again until the next, or a request)."""
    dep.log.append("[modeldeploy] a warm window began (warm_hours): waking it")
    try:
        await host.ensure_ready(dep)
    except Exception as exc:  # its state says what went wrong; the ticker goes on
        dep.log.append(f"[modeldeploy] waking it for the warm window failed: {exc}")


async def at_idle_limit(host: DeploymentHost, dep: Deployment, reason: str) -> None:
    """Sleep (engines that can), stop and relaunch on demand (parked), or stop; `reason` says how idle it was."""
    if not dep.universal_memory or dep.on_ray:
        await host.stop_run(dep, reason, Event.EXITED)
        return
    run = dep.run
    if run is not None and run.can_sleep():
        async with dep.wake_lock:
            if dep.in_flight or dep.status not in (Status.ACTIVE, Status.IDLE):
                return
            host.fire(dep, Event.QUIET)  # the idle limit passed: it is idle, whatever the report interval
            why = await run.sleep()
            if why is not None:
                dep.log.append(f"[modeldeploy] {why}; stopping it")
                await host.stop_run(dep, reason, Event.EXITED)
                return
            dep.log.append(f"[modeldeploy] {reason}: engine put to sleep; the next request wakes it")
            host.fire(dep, Event.SLEPT, "memory freed until the next request")
        return
    await host.stop_run(dep, f"{reason}; stopped to free memory (the engine has no sleep mode): the next request "
                             "relaunches it", Event.PARKED)
