"""Before a request is forwarded: a sleeping deployment serves again (Universal Memory's other half, `idle.py`).

A run put to sleep is woken (`Run.wake`: vLLM's wake calls, or a Ray replica started from zero); a
parked deployment (its engine stopped to free memory: no run) is launched again. The request is held
until it serves (or fails); concurrent requests share one wake-up (`dep.wake_lock`).
"""

from __future__ import annotations

import time

from .deployment import Deployment
from .run import DeploymentHost
from .state import Event, Status

SERVED = (Status.ACTIVE, Status.IDLE, Status.FAILED, Status.STOPPED)  # where a relaunch for a request ends up


async def ensure_ready(host: DeploymentHost, dep: Deployment) -> None:
    """Wake a sleeping run, or relaunch a parked deployment; nothing for any other state."""
    if dep.status not in (Status.SLEEPING, Status.WAKING):
        return
    async with dep.wake_lock:
        if dep.status is Status.SLEEPING:  # else another request woke it while this one waited
            await (wake_run(host, dep) if dep.run is not None else relaunch_parked(host, dep))


async def wake_run(host: DeploymentHost, dep: Deployment) -> None:
    """Wake the run (its engine kept running, asleep); a run that cannot serve again is stopped as failed."""
    assert dep.run is not None
    host.fire(dep, Event.WAKE)
    why = await dep.run.wake()
    if why is None:
        dep.last_activity_at = time.time()
        host.fire(dep, Event.WOKE)
    elif dep.ending is None:
        await host.stop_run(dep, why, Event.CRASHED)


async def relaunch_parked(host: DeploymentHost, dep: Deployment) -> None:
    """A parked deployment (its engine stopped to free memory) is launched again for the waiting request."""
    dep.log.append("[modeldeploy] relaunching for an incoming request")
    host.start_run(dep)
    await host.wait_for(dep, SERVED, host.health_timeout_s)
