"""The supervisor: starts engines, watches their health, stops them when idle, remembers them.

Each engine runs where a `Placement` puts it (this host: under `reaper.py` in its own process
group, on a Unix socket in its private folder). Every change of a deployment's status is an
event of the state machine in `state.py`; waiting for a state awaits its change, never a poll.
Deployments are kept in SQLite, so a restarted server lists them and can relaunch them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from ..config import ConfigError, DeploymentBase, export_config, parse_config
from ..engines import Engine, EngineSettings, LaunchContext, LaunchPlan, get_engine
from . import restart
from .deployment import Deployment, DeploymentError, Ending
from .engine_http import EngineHttp
from .keys import hash_key
from .local_run import LocalRun
from .logbuffer import MASK, LogBuffer
from .placement import LocalPlacement, Placement
from .progress import LoadProgress
from .ray_placement import ClusterUnavailable, RayCluster, RaySettings
from .replicas import Replica
from .run import Run
from .signals import DeploymentChange, Signal
from .state import Event, InvalidTransition, Status, idle_limit_reached, serving_status, transition
from .store import Store

__all__ = ["Deployment", "DeploymentError", "Ending", "Supervisor"]

log = logging.getLogger(__name__)

HISTORY_LIMIT = 200


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
        self.deployments: dict[str, Deployment] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._loaded = False
        self._background: set[asyncio.Future[None]] = set()  # keeps fire-and-forget tasks alive
        self.engine_http = EngineHttp(timeout=5.0)
        self.engines = dict(engines or {})  # kind -> engine, overriding the built-in ones (tests inject fakes)
        self.placement: Placement = placement or LocalPlacement()
        self.ray = RayCluster(ray or RaySettings())  # connected when a deployment first targets Ray
        self._release_on_start: set[str] = set()  # Ray deployments whose replicas are ended at start
        self.crashes = restart.CrashBook(restart_limits or restart.RestartLimits())
        self._resume: list[Deployment] = []  # brought back by the restart policy once the loop runs
        self._closing = False

    # Life of the supervisor ---------------------------------------------------------------

    async def start(self) -> None:
        """Load stored deployments (if not yet) and start the idle ticker."""
        self.load()
        self._resume_restored()
        for dep in self.deployments.values():
            if dep.reattach:
                dep.reattach = False
                self._start(dep, reattach=True)
        if self._release_on_start:
            self.spawn(self._release_left_replicas(self._release_on_start))
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
                self._record(dep, Status.STOPPED, dep.status_reason)
                dep.stopped_at = time.time()
                self.store.save(dep.to_stored())
            self.deployments[dep.id] = dep

    async def _release_left_replicas(self, deployment_ids: set[str]) -> None:
        """End the Ray replicas a previous server left running, for deployments not to be re-attached."""
        try:
            await self.ray.connect(None)
        except ClusterUnavailable as exc:
            log.warning("cannot end the Ray replicas left by the previous server: %s", exc)
            return
        loop = asyncio.get_running_loop()
        for dep_id in deployment_ids:
            for actor in (await loop.run_in_executor(None, self.ray.named, dep_id)).values():
                self.ray.kill(actor)
    def _restore(self, dep: Deployment) -> None:
        """A loaded deployment whose engine died with the previous server: stopped, or back by its restart policy."""
        resume = restart.on_server_start(dep.config.restart, dep.status, dep.status_reason)
        if resume is restart.Resume.PARK:
            dep.status_reason = "the Jupyter server restarted; the next request relaunches it (restart: always)"
            self._record(dep, Status.SLEEPING, dep.status_reason)
            self.store.save(dep.to_stored())
            return
        if resume is restart.Resume.RELAUNCH:
            self._resume.append(dep)
        if dep.status.live:
            # Its engine died with the previous server (reaper + parent-death signal).
            dep.status = Status.STOPPED
            dep.status_reason = "the Jupyter server restarted; " + (
                "relaunching (restart: always)" if resume is restart.Resume.RELAUNCH else "relaunch to serve again")
            self._record(dep, Status.STOPPED, dep.status_reason)
            dep.stopped_at = time.time()
            self.store.save(dep.to_stored())

    def _resume_restored(self) -> None:
        """Relaunch what the restart policy brings back (on the event loop, after load())."""
        resume, self._resume = self._resume, []
        for dep in resume:
            if dep.status is Status.STOPPED and dep.id in self.deployments:
                dep.log.append("[modeldeploy] the Jupyter server restarted: relaunching (restart: always)")
                self._start(dep)

    async def shutdown(self) -> None:
        """Stop every engine and close the store."""
        self._closing = True
        if self._ticker:
            self._ticker.cancel()
        live = [d for d in self.deployments.values() if d.status.live]
        kept = [d for d in live if d.ray_run is not None and self.ray.settings.reattach]
        for dep in kept:  # left running on the cluster; the stored state says live, so the next server re-attaches
            dep.ray_run.detached = True
            if dep.task is not None:
                dep.task.cancel()
        await asyncio.gather(*(self._stop(d, restart.SERVER_SHUTDOWN) for d in live if d not in kept),
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
            self._record(dep, Status.STOPPED, "created without launching")
        self.store.save(dep.to_stored())
        self.changes.send(DeploymentChange("created", dep))
        if start:
            self._start(dep)
        return dep

    async def relaunch(self, ref: str) -> Deployment:
        """Start a stopped or failed deployment again with its stored configuration."""
        dep = self.get(ref)
        if dep.status.live:
            raise DeploymentError(f"deployment {dep.name!r} is already {dep.status.value}", 409)
        self._check_unique(dep.config, route=dep.route, ignore=dep.id)
        self.crashes.forget(dep.id)
        self._start(dep)
        return dep

    async def stop(self, ref: str, reason: str = "stopped by the user") -> Deployment:
        """Stop a deployment's engine (no-op when it is not running)."""
        dep = self.get(ref)
        await self._stop(dep, reason)
        return dep

    async def delete(self, ref: str) -> None:
        """Stop a deployment and forget it."""
        dep = self.get(ref)
        await self._stop(dep, "deleted")
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
            self._start(dep)
        return dep

    def dry_run(self, config: DeploymentBase) -> LaunchPlan:
        """The launch plan for a config, with secrets masked; nothing is started or kept.

        Planning may prepare files in the work folder (router mode links its models there):
        a throw-away folder keeps a dry run from touching any deployment's state.
        """
        with tempfile.TemporaryDirectory(prefix="modeldeploy-dry-run-") as work_dir:
            ctx = LaunchContext(port=0, engine_key=MASK, work_dir=Path(work_dir), settings=self.settings)
            plan = self.engine(config.kind).plan(config, ctx)  # type: ignore[attr-defined]
        hidden = [s for s in plan.secrets if s and s != MASK]

        def mask(text: str) -> str:
            for secret in hidden:
                text = text.replace(secret, MASK)
            return text

        plan.argv = [mask(a) for a in plan.argv]
        plan.env = {k: mask(v) for k, v in plan.env.items()}
        plan.files = {k: mask(v) for k, v in plan.files.items()}
        return plan

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

    # Machinery ----------------------------------------------------------------------------

    def _new_deployment(
        self, dep_id: str, config: DeploymentBase, route: str, *, api_key_hash: str | None
    ) -> Deployment:
        work_dir = self.state_dir / "deployments" / dep_id
        work_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(work_dir, 0o700)
        return Deployment(
            id=dep_id, config=config, route=route, work_dir=work_dir,
            log=LogBuffer(work_dir / "console.log"), api_key_hash=api_key_hash,
            model_tasks=self.engine(config.kind).model_tasks(config),  # type: ignore[attr-defined]
        )

    def _check_unique(self, config: DeploymentBase, *, route: str | None = None, ignore: str | None = None) -> None:
        route = route if route is not None else config.route
        for other in self.deployments.values():
            if other.id == ignore:
                continue
            if other.status.live and other.name == config.name:
                raise DeploymentError(f"a live deployment is already named {config.name!r}", 409)
            if route and other.route == route:
                raise DeploymentError(f"route {route!r} is already used by deployment {other.name!r}", 409)

    def _record(self, dep: Deployment, status: Status, reason: str | None) -> None:
        entry = {"status": status.value, "at": time.time(), "reason": reason}
        dep.history = (dep.history + [entry])[-HISTORY_LIMIT:]

    def engine(self, kind: str) -> Engine:
        """The engine of a deployment kind: an injected one, else the built-in one."""
        return self.engines.get(kind) or get_engine(kind)

    def fire(self, dep: Deployment, event: Event, reason: str | None = None) -> bool:
        """Apply an event to a deployment's state; False (and nothing changes) when its state does not take it."""
        try:
            status = transition(dep.status, event)
        except InvalidTransition as exc:
            log.debug("deployment %s: %s", dep.id, exc)
            return False
        if status is dep.status and reason == dep.status_reason:
            return True
        dep.status = status
        dep.status_reason = reason
        self._record(dep, status, reason)
        self.store.save(dep.to_stored())
        changed, dep.changed = dep.changed, asyncio.Event()
        changed.set()  # wakes everything awaiting a change of this deployment
        self.changes.send(DeploymentChange("state", dep))
        return True

    async def wait_for(self, dep: Deployment, statuses: set[Status] | tuple[Status, ...], timeout: float) -> bool:
        """Await until the deployment is in one of `statuses` (True), or `timeout` seconds pass (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while dep.status not in statuses:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(dep.changed.wait(), remaining)
            except asyncio.TimeoutError:
                return False
        return True

    def _start(self, dep: Deployment, *, reattach: bool = False) -> None:
        dep.ending = None
        dep.exit_code = None
        dep.in_flight = 0
        dep.started_at = time.time()
        dep.stopped_at = None
        dep.last_activity_at = time.time()
        dep.plan = None
        dep.progress = LoadProgress(started_at=dep.started_at)
        dep.replicas = []
        self.fire(dep, Event.LAUNCH, "re-attaching its Ray replicas" if reattach else None)
        dep.task = asyncio.ensure_future(self._run(dep, reattach=reattach))

    async def _run(self, dep: Deployment, *, reattach: bool = False) -> None:
        run: Run
        if dep.on_ray:
            from .ray_run import RayRun

            run = RayRun(self, dep, self.ray)
        else:
            run = LocalRun(self, dep)
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
        """A stop is under way: why, and the state the run ends in (`RunHost`)."""
        dep.ending = ending
        self.fire(dep, Event.STOP, ending.reason if ending.outcome is not Event.CRASHED else None)

    async def _stop(self, dep: Deployment, reason: str, outcome: Event = Event.EXITED) -> None:
        """Stop the engine and await the end of its run (the state then is `outcome`'s)."""
        if not dep.status.live:
            return
        if dep.status is Status.STOPPING:
            if dep.task is not None:
                await asyncio.gather(dep.task, return_exceptions=True)
            return
        if dep.run is None and dep.status is Status.SLEEPING:
            # Parked (its engine was stopped to free memory): nothing runs, so it just stops.
            self.fire(dep, Event.STOP, reason)
            self.fire(dep, Event.EXITED, reason)
            return
        self.begin_stop(dep, Ending(reason, outcome))
        if dep.run is not None:
            await dep.run.stop()
        if dep.task is not None:
            await asyncio.gather(dep.task, return_exceptions=True)

    def finish(self, dep: Deployment, event: Event, reason: str) -> None:
        """A run ended: record it, forget its engine address, restart a crashed engine by its policy (`RunHost`)."""
        dep.stopped_at = time.time()
        dep.in_flight = 0
        dep.process = None
        dep.replicas = []
        if dep.listen is not None:
            self.spawn(self.engine_http.forget(dep.listen))
            if dep.listen.socket_path:
                Path(dep.listen.socket_path).unlink(missing_ok=True)
        delay = None
        if event is Event.CRASHED and dep.exit_code is not None:  # the engine ran, and crashed
            delay, reason = self._crash_policy(dep, reason)
        if not self.fire(dep, event, reason) and event is not Event.CRASHED:
            self.fire(dep, Event.CRASHED, reason)  # a state that cannot end that way still ends
        dep.log.append(f"[modeldeploy] {dep.status.value}: {reason.splitlines()[0]}")
        dep.ending = None
        dep.log.close_followers()
        if delay is not None:
            self.spawn(self._restart_later(dep, delay, dep.started_at))

    def _crash_policy(self, dep: Deployment, reason: str) -> tuple[float | None, str]:
        """After a crash: the restart delay (None: no restart) and the reason with what follows."""
        policy = dep.config.restart
        if self._closing or not restart.applies_to(dep.config) or not restart.restarts_crashes(policy):
            return None, reason
        decision = self.crashes.crashed(dep.id, policy, time.time())
        head, _, tail = reason.partition("\n")
        return decision.delay_s, f"{head}; {decision.note}" + (f"\n{tail}" if tail else "")

    async def _restart_later(self, dep: Deployment, delay: float, started_at: float | None) -> None:
        """Restart a crashed engine after its back-off, unless it was relaunched, deleted or the server is closing."""
        await asyncio.sleep(delay)
        if self._closing or dep.status is not Status.FAILED or dep.started_at != started_at:
            return
        if self.deployments.get(dep.id) is not dep:
            return
        dep.log.append(f"[modeldeploy] restarting the crashed engine (restart: {dep.config.restart})")
        self._start(dep)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine in the background, kept alive until it ends (`RunHost`)."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # Universal Memory: sleep when idle, wake on the next request ------------------------

    async def _on_idle_limit(self, dep: Deployment, reason: str) -> None:
        """At the idle limit: sleep (engines that can), stop-and-relaunch-on-demand, or stop.

        A Ray deployment stops (its way to free memory while idle is `replicas.min: 0`)."""
        if not dep.universal_memory or dep.on_ray:
            await self._stop(dep, reason)
            return
        run = dep.run
        if run is not None and run.can_sleep():
            async with dep.wake_lock:
                if dep.in_flight or dep.status not in (Status.ACTIVE, Status.IDLE):
                    return
                self.fire(dep, Event.QUIET)  # the idle limit passed: it is idle, whatever the report interval
                why = await run.sleep()
                if why is not None:
                    dep.log.append(f"[modeldeploy] {why}; stopping it")
                    await self._stop(dep, reason)
                    return
                dep.log.append(f"[modeldeploy] {reason}: engine put to sleep; the next request wakes it")
                self.fire(dep, Event.SLEPT, "memory freed until the next request")
            return
        await self._stop(dep, f"{reason}; stopped to free memory (the engine has no sleep mode): the next request "
                              "relaunches it", Event.PARKED)

    async def ensure_ready(self, dep: Deployment) -> None:
        """Before a request is forwarded: wake a sleeping engine, or relaunch one parked to free memory.

        The request is held until the engine serves again (or fails); concurrent requests share one wake-up.
        """
        if dep.status not in (Status.SLEEPING, Status.WAKING):
            return
        async with dep.wake_lock:
            if dep.status is Status.SLEEPING:  # else another request woke it while this one waited
                await (self._wake(dep) if dep.run is not None else self._relaunch_parked(dep))

    async def _wake(self, dep: Deployment) -> None:
        """Wake the run (its engine kept running, asleep); a run that cannot serve again is stopped as failed."""
        assert dep.run is not None
        self.fire(dep, Event.WAKE)
        why = await dep.run.wake()
        if why is None:
            dep.last_activity_at = time.time()
            self.fire(dep, Event.WOKE)
        elif dep.ending is None:
            await self._stop(dep, why, Event.CRASHED)

    async def _relaunch_parked(self, dep: Deployment) -> None:
        """A parked deployment (its engine stopped to free memory) is launched again for the waiting request."""
        dep.log.append("[modeldeploy] relaunching for an incoming request")
        self._start(dep)
        await self.wait_for(dep, (Status.ACTIVE, Status.IDLE, Status.FAILED, Status.STOPPED), self.health_timeout_s)

    async def engine_calls(self, dep: Deployment, calls: list[Any]) -> None:
        """Make engine control requests (EngineCall: method, path, params, json) (`RunHost`)."""
        if dep.address is None:
            raise RuntimeError("the engine is not running")
        for call in calls:
            response = await self.engine_http.request(
                dep.address, dep.engine_key, call.method, call.path, params=call.params or None, json=call.json,
                timeout=self.health_timeout_s,
            )
            if response.status_code >= 400:
                raise RuntimeError(f"{call.method} {call.path}: HTTP {response.status_code} {response.text[:200]}")

    # LoRA adapters at runtime -----------------------------------------------------------

    async def adapter(self, ref: str, action: str, name: str, path: str | None = None) -> Deployment:
        """Load ('add') or unload ('remove') a LoRA adapter on a running deployment; kept in its config."""
        dep = self.get(ref)
        calls = self.engine(dep.kind).adapter_calls(action, name, path)  # None: the engine loads none at runtime
        exported = export_config(dep.config)
        if calls is None or not exported.get("enable_lora"):
            raise DeploymentError(f"deployment {dep.name!r} does not serve LoRA adapters (enable_lora is off)", 400)
        if not dep.status.serving:
            raise DeploymentError(f"deployment {dep.name!r} is {dep.status.value}; adapters change on a serving engine", 409)
        modules = list(exported.get("lora_modules") or [])
        names = [m.split("=", 1)[0] for m in modules]
        if action == "add":
            if not path:
                raise DeploymentError("an adapter needs a path", 400)
            if name in names or name in dep.models:
                raise DeploymentError(f"an adapter or model named {name!r} is already served", 409)
        elif name not in names:
            raise DeploymentError(f"no adapter {name!r}; served adapters: {', '.join(names) or 'none'}", 404)
        await self.ensure_ready(dep)
        try:
            await self.engine_calls(dep, calls)
        except RuntimeError as exc:
            raise DeploymentError(f"the engine refused: {exc}", 422) from None
        if action == "add":
            modules.append(f"{name}={path}")
            if dep.plan:
                dep.plan.models.append(name)
        else:
            modules = [m for m in modules if m.split("=", 1)[0] != name]
            if dep.plan and name in dep.plan.models:
                dep.plan.models.remove(name)
        dep.config = parse_config({**export_config(dep.config, include_secrets=True), "lora_modules": modules})
        dep.model_tasks = self.engine(dep.kind).model_tasks(dep.config)
        self.store.save(dep.to_stored())
        self.changes.send(DeploymentChange("models", dep))
        return dep

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self._tick()
            except Exception:  # the ticker must survive anything one deployment does
                log.exception("supervisor tick failed")

    async def _tick(self) -> None:
        now = time.time()
        for dep in list(self.deployments.values()):
            if dep.status not in (Status.ACTIVE, Status.IDLE) or (dep.idle_task and not dep.idle_task.done()):
                continue
            cfg = dep.config
            if idle_limit_reached(
                in_flight=dep.in_flight, last_activity=dep.last_activity_at, now=now, limit_s=cfg.idle_time_limit_s
            ):
                idle_for = now - dep.last_activity_at
                reason = f"idle for {idle_for:.0f} s (idle_time_limit_hours={cfg.idle_time_limit_hours:g})"
                dep.idle_task = asyncio.ensure_future(self._on_idle_limit(dep, reason))
                continue
            status = serving_status(
                in_flight=dep.in_flight,
                last_activity=dep.last_activity_at,
                now=now,
                report_interval_s=cfg.last_action_report_interval_s,
            )
            if status is not dep.status:
                self.fire(dep, Event.BUSY if status is Status.ACTIVE else Event.QUIET)
