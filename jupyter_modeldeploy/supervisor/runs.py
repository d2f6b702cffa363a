"""A deployment's runs as the supervisor drives them: started (`LocalRun` on this host, `RayRun` on a Ray
cluster), asked to stop, their end recorded (a run parked to free memory leaves a `ParkedRun`, which the
next request wakes), and a crashed engine restarted by its policy (`restart.py`).

The runs talk back through the supervisor (`run.RunHost`), whose `begin_stop`, `finish` and `spawn`
are these; the events they fire go through the one state-machine driver (`transitions.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

from .deployment import Deployment, Ending
from .local_run import LocalRun
from .parked_run import ParkedRun
from .ray_placement import RayCluster
from .restart import CrashBook
from .run import DeploymentHost, Run
from .state import Event, Status

log = logging.getLogger(__name__)


class Runs:
    """Starts, stops and ends the runs of the deployments in `registry`."""

    def __init__(self, host: DeploymentHost, registry: Mapping[str, Deployment], cluster: RayCluster,
                 crashes: CrashBook):
        self.host = host
        self.registry = registry
        self.cluster = cluster  # connected when a deployment first targets Ray
        self.crashes = crashes
        self.closing = False  # the server shuts down: no crashed engine is restarted
        self._background: set[asyncio.Future[None]] = set()  # keeps fire-and-forget tasks alive

    def start(self, dep: Deployment, *, reattach: bool = False) -> None:
        """Start a new run of the deployment: LAUNCH, then the run (local or Ray) in the background."""
        dep.begin_run()
        dep.run = None  # a parked run's place: the new run takes it once it is made
        self.host.fire(dep, Event.LAUNCH, "re-attaching its Ray replicas" if reattach else None)
        dep.task = asyncio.ensure_future(self._drive(dep, reattach=reattach))

    async def _drive(self, dep: Deployment, *, reattach: bool = False) -> None:
        run: Run
        if dep.on_ray:
            from .ray_run import RayRun

            run = RayRun(self.host, dep, self.cluster)
        else:
            run = LocalRun(self.host, dep)
        dep.run = run
        try:
            await run.start(reattach=reattach)
        except Exception as exc:  # a bug must show as a failed deployment, not vanish
            log.exception("deployment %s crashed", dep.id)
            self.finish(dep, Event.CRASHED, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if not run.detached and dep.run is run:
                dep.run = None

    def begin_stop(self, dep: Deployment, ending: Ending) -> None:
        """A stop is under way: why, and the state the run ends in."""
        dep.ending = ending
        self.host.fire(dep, Event.STOP, ending.reason if ending.outcome is not Event.CRASHED else None)

    async def stop(self, dep: Deployment, reason: str, outcome: Event = Event.EXITED) -> None:
        """Stop the engine and await the end of its run (the state then is `outcome`'s)."""
        if not dep.status.live:
            return
        if dep.status is Status.STOPPING:
            if dep.task is not None:
                await asyncio.gather(dep.task, return_exceptions=True)
            return
        self.begin_stop(dep, Ending(reason, outcome))
        if dep.run is not None:
            await dep.run.stop()
        if dep.task is not None:
            await asyncio.gather(dep.task, return_exceptions=True)

    def finish(self, dep: Deployment, event: Event, reason: str) -> None:
        """A run ended: record it, forget its engine address, restart a crashed engine by its policy."""
        dep.stopped_at = time.time()
        dep.in_flight = 0
        dep.process = None
        dep.replicas = []
        if dep.listen is not None:
            self.spawn(self.host.engine_http.forget(dep.listen))
            if dep.listen.socket_path:
                Path(dep.listen.socket_path).unlink(missing_ok=True)
        delay = None
        if event is Event.CRASHED and dep.exit_code is not None and not self.closing:  # the engine ran, and crashed
            delay, reason = self.crashes.after(dep.id, dep.config, reason, time.time())
        if not self.host.fire(dep, event, reason) and event is not Event.CRASHED:
            self.host.fire(dep, Event.CRASHED, reason)  # a state that cannot end that way still ends
        if dep.status is Status.SLEEPING:  # parked: the engine stopped to free memory, the next request relaunches it
            self.park(dep)
        dep.log.append(f"[modeldeploy] {dep.status.value}: {reason.splitlines()[0]}")
        dep.ending = None
        dep.log.close_followers()
        if delay is not None:
            self.spawn(self._restart_later(dep, delay, dep.started_at))

    def park(self, dep: Deployment) -> None:
        """The deployment sleeps with no engine: its run is a `ParkedRun`, which the next request wakes."""
        dep.run = ParkedRun(self.host, dep)

    async def _restart_later(self, dep: Deployment, delay: float, started_at: float | None) -> None:
        """Restart a crashed engine after its back-off, unless it was relaunched, deleted or the server is closing."""
        await asyncio.sleep(delay)
        if self.closing or dep.status is not Status.FAILED or dep.started_at != started_at:
            return
        if self.registry.get(dep.id) is not dep:
            return
        dep.log.append(f"[modeldeploy] restarting the crashed engine (restart: {dep.config.restart})")
        self.start(dep)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine in the background, kept alive until it ends."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
