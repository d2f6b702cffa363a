"""At the idle limit (`idle_time_limit_hours`, found by the supervisor's ticker): what frees the memory.

Without Universal Memory (`cpu_offload` / `disk_swap`), or on Ray (where `replicas.min: 0` frees it),
the deployment stops. With it, an engine that can sleep (vLLM's sleep mode) is put to sleep and the
next request wakes it (`wake.py`); one that cannot is stopped as parked: `sleeping` with no run, and
the next request relaunches it.
"""

from __future__ import annotations

from .deployment import Deployment
from .run import DeploymentHost
from .state import Event, Status


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
