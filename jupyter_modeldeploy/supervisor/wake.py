"""Before a request is forwarded: a sleeping deployment serves again (Universal Memory's other half, `idle.py`).

Every run wakes itself (`Run.wake`): `LocalRun` makes its engine's wake calls, `RayRun` starts a
replica from zero, `ParkedRun` (an engine stopped to free memory) launches the deployment again. What
they share is here: only the first request that finds the deployment sleeping wakes it, and the
requests beside it wait for that wake-up (`dep.wake_lock`); an engine that woke in its own run goes
WAKE..WOKE, and one that cannot serve again is stopped as failed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from .deployment import Deployment
from .run import RunHost
from .state import Event, Status


async def once(dep: Deployment, wake_up: Callable[[], Awaitable[None]]) -> None:
    """Run `wake_up` for the first request that finds the deployment sleeping; a request that comes while it
    wakes waits for it; nothing for any other state."""
    if dep.status not in (Status.SLEEPING, Status.WAKING):
        return
    async with dep.wake_lock:
        if dep.status is Status.SLEEPING:  # else another request woke it while this one waited
            await wake_up()


async def from_sleep(host: RunHost, dep: Deployment, wake_engine: Callable[[], Awaitable[str | None]]) -> None:
    """A run whose engine sleeps in it: WAKE, `wake_engine` (None when it serves, else why not), WOKE; a run
    that cannot serve again is stopped as failed."""

    async def wake_up() -> None:
        host.fire(dep, Event.WAKE)
        why = await wake_engine()
        if why is None:
            dep.last_activity_at = time.time()
            host.fire(dep, Event.WOKE)
        elif dep.ending is None:
            await host.stop_run(dep, why, Event.CRASHED)

    await once(dep, wake_up)
