"""The supervisor: the registry of deployments, the commands on them, restore after a restart, and the ticker.

Each deployment runs as one run (`runs.py` starts, stops and ends it: `LocalRun` on this host,
under `reaper.py` on a Unix socket in its private folder, `RayRun` on a cluster, `ParkedRun` while
its engine is stopped to free memory). Every change of a deployment's status is an event of the
state machine in `state.py`, applied by `transitions.py`; waiting for a state awaits its change,
never a poll. The ticker finds the idle limit (`idle.py` acts on it); a request wakes what sleeps
(`Run.wake`, `wake.py`); adapters change through the engine (`adapters.py`). Deployments are
kept in SQLite, so a restarted server lists them and can relaunch them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Collection, Coroutine
from pathlib import Path
from typing import Any

from ..config import ConfigError, DeploymentBase, export_config, parse_config
from ..engines import Engine, EngineSettings, LaunchPlan, get_engine
from ..engines.base import EngineCall
from ..keys import hash_key
from . import adapters, idle, restart
from .deployment import Deployment, DeploymentError, Ending
from .dry_run import masked_plan
from .engine_http import EngineHttp
from .logbuffer import LogBuffer
from .placement import LocalPlacement, Placement
from .ray_placement import RayCluster, RaySettings
from .replicas import Replica
from .runs import Runs
from .signals import DeploymentChange, Signal
from .state import Event, Status, serving_status
from .store import Store
from .transitions import Transitions, record_history

__all__ = ["Deployment", "DeploymentError", "Ending", "Supervisor"]

log = logging.getLogger(__name__)


class Supervisor:
    """Runs and remembers deployments; every method runs on the server's event loop."""

    def __init__(
        self,
        state_dir: Path,
        settings: EngineSettings | None = None,
        *,
        health_timeout_s: float = 900.0,
        stop_grace_s: float = 10.0,
        tick_s: float = 1.0,
        probe_interval_s: float = 1.0,
        probe_timeout_s: float = 2.0,
        probe_failures: int = 3,
        unhealthy_limit_s: float = 60.0,
        engines: dict[str, Engine] | None = None,
        placement: Placement | None = None,
        ray: RaySettings | None = None,
        restart_limits: restart.RestartLimits | None = None,
    ):
        self.state_dir = state_dir
        self.settings = settings or EngineSettings()
        self.health_timeout_s = health_timeout_s
        self.stop_grace_s = stop_grace_s
        # While serving, health is probed every probe_interval_s; probe_failures misses in a row
        # make the deployment unhealthy (503 at once), unhealthy_limit_s of it ends the engine.
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.probe_failures = probe_failures
        self.unhealthy_limit_s = unhealthy_limit_s
        self.tick_s = tick_s
        # Deployments created, changed in state or models, deleted: whoever acts on it subscribes.
        self.changes: Signal[DeploymentChange] = Signal("deployment changes")
        state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(state_dir, 0o700)
        self.store = Store(state_dir / "deployments.sqlite")
        self.transitions = Transitions(self.store, self.changes)
        self.deployments: dict[str, Deployment] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._loaded = False
        self.engine_http = EngineHttp(timeout=5.0)
        self.engines = dict(engines or {})  # kind -> engine, overriding the built-in ones (tests inject fakes)
        self.placement: Placement = placement or LocalPlacement()
        self.ray = RayCluster(ray or RaySettings())  # connected when a deployment first targets Ray
        self._release_on_start: set[str] = set()  # Ray deployments whose replicas are ended at start
        self.crashes = restart.CrashBook(restart_limits or restart.RestartLimits())
        self.runs = Runs(self, self.deployments, self.ray, self.crashes)
        self._resume: list[Deployment] = []  # brought back by the restart policy once the loop runs

    # Life of the supervisor ---------------------------------------------------------------

    async def start(self) -> None:
        """Load stored deployments (if not yet) and start the idle ticker."""
        self.load()
        self._resume_restored()
        for dep in self.deployments.values():
            if dep.reattach:
                dep.reattach = False
                self.start_run(dep, reattach=True)
        if self._release_on_start:
            self.spawn(self.ray.release_left(self._release_on_start))
            self._release_on_start = set()
        if self._ticker is None:
            self._ticker = asyncio.ensure_future(self._tick_forever())

    def load(self) -> None:
        """Read the stored deployments; those that were live are now stopped (their engines died)."""
        if self._loaded:
            return
        self._loaded = True
        for row in self.store.load_all():
            try:
                config = parse_config(row.config)
            except ConfigError as exc:
                self.store.skip("deployments", row.id, f"its configuration no longer validates: {exc}")
                continue
            dep = self._new_deployment(row.id, config, row.route, api_key_hash=row.api_key_hash)
            dep.status = Status(row.status)
            dep.status_reason = row.status_reason
            dep.history = row.history
            dep.created_at = row.created_at
            dep.started_at = row.started_at
            dep.stopped_at = row.stopped_at
            dep.exit_code = row.exit_code
            dep.last_activity_at = row.last_activity_at or row.created_at
            if dep.status.live and dep.on_ray and self.ray.settings.reattach:
                # Its replicas outlive the server (detached actors): the next start takes them over.
                dep.status = Status.STOPPED
                dep.reattach = True
                dep.log.append("[modeldeploy] the Jupyter server restarted: re-attaching the Ray replicas")
            elif restart.applies_to(config):
                self._restore(dep)  # the restart policy: stopped, or back by itself
            elif dep.status.live:
                # Its engine died with the previous server (reaper + parent-death signal); Ray
                # replicas outlive it, and are ended at start since they are not to be re-attached.
                if dep.on_ray:
                    self._release_on_start.add(dep.id)
                dep.status = Status.STOPPED
                dep.status_reason = "the Jupyter server restarted; relaunch to serve again"
                record_history(dep, Status.STOPPED, dep.status_reason)
                dep.stopped_at = time.time()
                self.store.save(dep.to_stored())
            self.deployments[dep.id] = dep

    def _restore(self, dep: Deployment) -> None:
        """A loaded deployment whose engine died with the previous server: stopped, or back by its restart policy."""
        resume = restart.on_server_start(dep.config.restart, dep.status, dep.status_reason)
        if resume is restart.Resume.PARK:
            dep.status_reason = "the Jupyter server restarted; the next request relaunches it (restart: always)"
            record_history(dep, Status.SLEEPING, dep.status_reason)
            self.store.save(dep.to_stored())
            self.runs.park(dep)
            return
        if resume is restart.Resume.RELAUNCH:
            self._resume.append(dep)
        if dep.status.live:
            # Its engine died with the previous server (reaper + parent-death signal).
            dep.status = Status.STOPPED
            dep.status_reason = "the Jupyter server restarted; " + (
                "relaunching (restart: always)" if resume is restart.Resume.RELAUNCH else "relaunch to serve again")
            record_history(dep, Status.STOPPED, dep.status_reason)
            dep.stopped_at = time.time()
            self.store.save(dep.to_stored())

    def _resume_restored(self) -> None:
        """Relaunch what the restart policy brings back (on the event loop, after load())."""
        resume, self._resume = self._resume, []
        for dep in resume:
            if dep.status is Status.STOPPED and dep.id in self.deployments:
                dep.log.append("[modeldeploy] the Jupyter server restarted: relaunching (restart: always)")
                self.start_run(dep)

    async def shutdown(self) -> None:
        """Stop every engine and close the store."""
        self.runs.closing = True
        if self._ticker:
            self._ticker.cancel()
        live = [d for d in self.deployments.values() if d.status.live]
        kept = [d for d in live if d.ray_run is not None and self.ray.settings.reattach]
        for dep in kept:  # left running on the cluster; the stored state says live, so the next server re-attaches
            dep.ray_run.detached = True
            if dep.task is not None:
                dep.task.cancel()
        await asyncio.gather(*(self.stop_run(d, restart.SERVER_SHUTDOWN) for d in live if d not in kept),
                             return_exceptions=True)
        await self.engine_http.close()
        self.store.close()

    # Queries ------------------------------------------------------------------------------

    def list(self) -> list[Deployment]:
        """Every deployment, oldest first."""
        return sorted(self.deployments.values(), key=lambda d: d.created_at)

    def get(self, ref: str) -> Deployment:
        """A deployment by id, or by name (the live one first, else the newest)."""
        if ref in self.deployments:
            return self.deployments[ref]
        named = [d for d in self.deployments.values() if d.name == ref]
        if not named:
            raise DeploymentError(f"no deployment with id or name {ref!r}", 404)
        named.sort(key=lambda d: (d.status.live, d.created_at), reverse=True)
        return named[0]

    def by_route(self, route: str) -> Deployment | None:
        """The deployment that owns an endpoint route."""
        for dep in self.deployments.values():
            if dep.route == route:
                return dep
        return None

    # Commands -----------------------------------------------------------------------------

    async def launch(self, config: DeploymentBase, *, start: bool = True) -> Deployment:
        """Create a deployment from a validated config and start its engine."""
        self._check_unique(config)
        dep_id = secrets.token_hex(4)
        while dep_id in self.deployments:
            dep_id = secrets.token_hex(4)
        route = config.route or f"r-{secrets.token_hex(6)}"
        key_hash = hash_key(config.api_key.get_secret_value()) if config.api_key else None
        dep = self._new_deployment(dep_id, config, route, api_key_hash=key_hash)
        self.deployments[dep.id] = dep
        if not start:
            record_history(dep, Status.STOPPED, "created without launching")
        self.store.save(dep.to_stored())
        self.changes.send(DeploymentChange("created", dep))
        if start:
            self.start_run(dep)
        return dep

    async def relaunch(self, ref: str) -> Deployment:
        """Start a stopped or failed deployment again with its stored configuration."""
        dep = self.get(ref)
        if dep.status.live:
            raise DeploymentError(f"deployment {dep.name!r} is already {dep.status.value}", 409)
        self._check_unique(dep.config, route=dep.route, ignore=dep.id)
        self.crashes.forget(dep.id)
        self.start_run(dep)
        return dep

    async def stop(self, ref: str, reason: str = "stopped by the user") -> Deployment:
        """Stop a deployment's engine (no-op when it is not running)."""
        dep = self.get(ref)
        await self.stop_run(dep, reason)
        return dep

    async def delete(self, ref: str) -> None:
        """Stop a deployment and forget it."""
        dep = self.get(ref)
        await self.stop_run(dep, "deleted")
        del self.deployments[dep.id]
        self.store.delete(dep.id)
        self.changes.send(DeploymentChange("deleted", dep))

    async def clone(
        self, ref: str, name: str, overrides: dict[str, Any] | None = None, *, start: bool = True,
        include_secrets: bool = True,
    ) -> Deployment:
        """A new deployment from another's configuration under a new name: the one clone operation.

        `include_secrets`: the source's fixed API key and Hugging Face token come along (the
        key as its hash: it is never stored in clear); without, the clone has neither.
        """
        source = self.get(ref)
        data = export_config(source.config, include_secrets=include_secrets)
        data.update(overrides or {})
        data["name"] = name
        if "route" not in (overrides or {}):
            data["route"] = ""
        config = parse_config(data)
        dep = await self.launch(config, start=False)
        if include_secrets and config.api_key is None and source.api_key_hash:
            dep.api_key_hash = source.api_key_hash
            self.store.save(dep.to_stored())
        if start:
            self.start_run(dep)
        return dep

    def dry_run(self, config: DeploymentBase) -> LaunchPlan:
        """The launch plan for a config, with secrets masked; nothing is started or kept (`dry_run.py`)."""
        return masked_plan(self.engine(config.kind), config, self.settings)  # type: ignore[attr-defined]

    # Activity (called by the gateway) -----------------------------------------------------

    def request_started(self, dep: Deployment) -> None:
        """A request entered the gateway for this deployment."""
        dep.in_flight += 1
        dep.last_activity_at = time.time()
        if dep.status is Status.IDLE:
            self.fire(dep, Event.BUSY)

    def replica_unreachable(self, dep: Deployment, replica: Replica, reason: str) -> None:
        """The gateway could not connect to a replica (a Ray replica leaves the rotation at once)."""
        if dep.ray_run is not None:
            dep.ray_run.unreachable(replica, reason)

    def request_finished(self, dep: Deployment) -> None:
        """A request left the gateway; the idle clock runs from here."""
        dep.in_flight = max(0, dep.in_flight - 1)
        dep.last_activity_at = time.time()

    # The registry -------------------------------------------------------------------------

    def _new_deployment(
        self, dep_id: str, config: DeploymentBase, route: str, *, api_key_hash: str | None
    ) -> Deployment:
        """A deployment record with its private work folder (0700) and console log; not yet registered."""
        work_dir = self.state_dir / "deployments" / dep_id
        work_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(work_dir, 0o700)
        return Deployment(
            id=dep_id, config=config, route=route, work_dir=work_dir,
            log=LogBuffer(work_dir / "console.log"), api_key_hash=api_key_hash,
            model_tasks=self.engine(config.kind).model_tasks(config),  # type: ignore[attr-defined]
        )

    def _check_unique(self, config: DeploymentBase, *, route: str | None = None, ignore: str | None = None) -> None:
        """Refuse (409) a name a live deployment has, or a route another deployment owns."""
        route = route if route is not None else config.route
        for other in self.deployments.values():
            if other.id == ignore:
                continue
            if other.status.live and other.name == config.name:
                raise DeploymentError(f"a live deployment is already named {config.name!r}", 409)
            if route and other.route == route:
                raise DeploymentError(f"route {route!r} is already used by deployment {other.name!r}", 409)

    def engine(self, kind: str) -> Engine:
        """The engine of a deployment kind: an injected one, else the built-in one."""
        return self.engines.get(kind) or get_engine(kind)

    # The state machine (`transitions.py`) ---------------------------------------------------

    def fire(self, dep: Deployment, event: Event, reason: str | None = None) -> bool:
        """Apply an event to a deployment's state (`Transitions.fire`); False when its state does not take it."""
        return self.transitions.fire(dep, event, reason)

    async def wait_for(self, dep: Deployment, statuses: Collection[Status], timeout: float) -> bool:
        """Await until the deployment is in one of `statuses` (True), or `timeout` seconds pass (False)."""
        return await self.transitions.wait_for(dep, statuses, timeout)

    # The runs (`runs.py`) ----------------------------------------------------------------

    def start_run(self, dep: Deployment, *, reattach: bool = False) -> None:
        """Start a new run of the deployment (LAUNCH, then the run in the background)."""
        self.runs.start(dep, reattach=reattach)

    async def stop_run(self, dep: Deployment, reason: str, outcome: Event = Event.EXITED) -> None:
        """Stop the engine and await the end of its run (the state then is `outcome`'s)."""
        await self.runs.stop(dep, reason, outcome)

    def begin_stop(self, dep: Deployment, ending: Ending) -> None:
        """A stop is under way: why, and the state the run ends in (`RunHost`)."""
        self.runs.begin_stop(dep, ending)

    def finish(self, dep: Deployment, event: Event, reason: str) -> None:
        """A run ended: record it, forget its engine address, restart a crashed engine by its policy (`RunHost`)."""
        self.runs.finish(dep, event, reason)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine in the background, kept alive until it ends (`RunHost`)."""
        self.runs.spawn(coro)

    # Universal Memory: sleep when idle (`idle.py`), wake on the next request (`Run.wake`) -----

    async def ensure_ready(self, dep: Deployment) -> None:
        """Before a request is forwarded: the run serves again if it sleeps (a sleeping engine woken, a Ray
        deployment's replica started from zero, a parked one relaunched); nothing while it serves."""
        if dep.run is not None:
            await dep.run.wake()

    # Engine control calls and LoRA adapters (`adapters.py`) ---------------------------------

    async def engine_calls(self, dep: Deployment, calls: list[EngineCall]) -> None:
        """Make engine control requests (sleep, wake, adapters); RuntimeError when one is refused (`RunHost`)."""
        if dep.address is None:
            raise RuntimeError("the engine is not running")
        await self.engine_http.calls(dep.address, dep.engine_key, calls, timeout=self.health_timeout_s)

    async def adapter(self, ref: str, action: str, name: str, path: str | None = None) -> Deployment:
        """Load ('add') or unload ('remove') a LoRA adapter on a running deployment; kept in its config."""
        dep = self.get(ref)
        await adapters.change_adapter(self, dep, action, name, path)
        return dep

    # The ticker ------------------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        """Every `tick_s`: one tick, whatever one deployment's tick raised."""
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self._tick()
            except Exception:  # the ticker must survive anything one deployment does
                log.exception("supervisor tick failed")

    async def _tick(self) -> None:
        """Serving deployments: the idle limit acted on (`idle.py`), else `active` / `idle` by the last request;
        sleeping ones woken inside a warm window (`warm_hours`)."""
        now = time.time()
        for dep in list(self.deployments.values()):
            if idle.warm_window_began(dep, now) and dep.status is Status.SLEEPING:
                dep.idle_task = asyncio.ensure_future(idle.warm_up(self, dep))
            if dep.idle_task and not dep.idle_task.done():
                continue
            if dep.status not in (Status.ACTIVE, Status.IDLE):
                continue
            reason = idle.limit_reason(dep, now)
            if reason is not None:
                dep.idle_task = asyncio.ensure_future(idle.at_idle_limit(self, dep, reason))
                continue
            status = serving_status(in_flight=dep.in_flight, last_activity=dep.last_activity_at, now=now,
                                    report_interval_s=dep.config.last_action_report_interval_s)
            if status is not dep.status:
                self.fire(dep, Event.BUSY if status is Status.ACTIVE else Event.QUIET)
