"""A parked deployment's run: its engine was stopped to free memory (`idle.py`, or a restored deployment under
`restart: always`), and the next request launches the deployment again.

Nothing runs, but the deployment has a run like any other (`run.Run`), so the supervisor asks every
deployment the same things (`wake` before a request, `stop`) and never branches on whether it is parked.
"""

from __future__ import annotations

from .deployment import Deployment
from .run import DeploymentHost
from .state import Event, Status
from .wake import once

SERVED = (Status.ACTIVE, Status.IDLE, Status.FAILED, Status.STOPPED)  # where a relaunch for a request ends up


class ParkedRun:
    """The run of a deployment that sleeps with no engine: `wake` relaunches it, `stop` just stops it."""

    def __init__(self, host: DeploymentHost, dep: Deployment):
        self.host = host
        self.dep = dep
        self.detached = False  # nothing to leave running

    async def start(self, *, reattach: bool = False) -> None:
        """Nothing to start: the engine is stopped; the next request's `wake` starts the deployment's next run."""

    def can_sleep(self) -> bool:
        """False: the engine is already stopped, there is nothing more to free."""
        return False

    async def sleep(self) -> str | None:
        """Nothing to put to sleep; says why."""
        return "the engine is already stopped to free memory"

    async def wake(self) -> None:
        """Launch the deployment again for the waiting request, and hold it until it serves (or fails)."""
        await once(self.dep, self._relaunch)

    async def _relaunch(self) -> None:
        dep, host = self.dep, self.host
        dep.log.append("[modeldeploy] relaunching for an incoming request")
        host.start_run(dep)
        await host.wait_for(dep, SERVED, host.health_timeout_s)

    async def stop(self) -> None:
        """Nothing runs, so the stop under way (`begin_stop`) ends at once: the deployment is stopped."""
        dep = self.dep
        reason = dep.ending.reason if dep.ending is not None else "stopped"
        dep.ending = None
        dep.run = None
        self.host.fire(dep, Event.EXITED, reason)

    async def health(self) -> bool:
        """False: no engine answers until the next request relaunches it."""
        return False
