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
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..config import ConfigError, DeploymentBase, export_config, parse_config
from ..engines import Engine, EngineAddress, EngineSettings, EngineUnavailable, LaunchContext, LaunchPlan, get_engine
from ..engines.hf import ModelNotFound
from ..engines.progress import STARTING
from . import restart
from .engine_http import EngineHttp
from .keys import hash_key
from .logbuffer import MASK, LogBuffer
from .placement import EngineHandle, LocalPlacement, Placement
from .progress import LoadProgress
from .ray_placement import ClusterUnavailable, RayCluster, RaySettings
from .replicas import Replica, set_serving
from .signals import DeploymentChange, Signal
from .state import Event, InvalidTransition, Status, failure_reason, idle_limit_reached, serving_status, transition
from .store import Store, StoredDeployment

log = logging.getLogger(__name__)

HISTORY_LIMIT = 200
SOCKET_NAME = "engine.sock"  # llama-server takes a Unix socket for a host ending in '.sock'
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes
# Variables of the Jupyter server that an engine has no business seeing.
SCRUBBED_ENV = ("JUPYTER_TOKEN", "JPY_API_TOKEN", "JUPYTERHUB_API_TOKEN", "JPY_SESSION_NAME")


class DeploymentError(Exception):
    """A request the supervisor refuses; `status` is the HTTP status that fits it."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Ending:
    """A stop under way: the reason to record and the event that ends the run."""

    reason: str
    outcome: Event = Event.EXITED  # EXITED: stopped; PARKED: sleeping, relaunched on demand; CRASHED: failed
    reason_from_log: bool = False  # failed: the reason is the engine's exit and last log lines


@dataclass
class Deployment:
    """One deployment: its configuration, status and (while live) its engine process."""

    id: str
    config: DeploymentBase
    route: str
    work_dir: Path
    log: LogBuffer
    api_key_hash: str | None = None
    status: Status = Status.STOPPED
    status_reason: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    stopped_at: float | None = None
    exit_code: int | None = None
    last_activity_at: float = field(default_factory=time.time)
    in_flight: int = 0
    port: int | None = None
    listen: EngineAddress | None = None  # where the engine listens, from its launch plan
    engine_key: str | None = None
    plan: LaunchPlan | None = None
    process: EngineHandle | None = None
    task: asyncio.Task[None] | None = None
    ending: Ending | None = None  # while stopping: why, and the state the run ends in
    health_task: asyncio.Task[None] | None = None
    idle_task: asyncio.Future[None] | None = None  # the idle-limit action under way
    wake_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set (and replaced) at every status change
    replicas: list[Replica] = field(default_factory=list)  # the engines serving it (one, on this host, for local)
    ray_run: Any = None  # RayRun while a Ray deployment runs
    reattach: bool = False  # at the next start: take over the Ray replicas a previous server left running
    progress: LoadProgress | None = None  # the phases of the current (or last) launch

    @property
    def universal_memory(self) -> bool:
        """Whether idle time should free memory (sleep, or stop and relaunch) rather than just stop."""
        return bool(self.config.cpu_offload or self.config.disk_swap)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def kind(self) -> str:
        return self.config.kind  # type: ignore[attr-defined]

    @property
    def address(self) -> EngineAddress | None:
        """Where the engine listens, while its process runs (a Ray deployment: a serving replica's)."""
        if self.on_ray:
            return next((r.address for r in self.replicas if r.in_rotation), None)
        return self.listen if self.process is not None and self.status.live else None

    @property
    def on_ray(self) -> bool:
        """Whether its replicas run on a Ray cluster."""
        return bool(self.config.placement.on_ray)

    model_tasks: dict[str, str] = field(default_factory=dict)  # served name -> chat/embed/rerank (the engine's word)

    @property
    def models(self) -> list[str]:
        """Model names the engine serves (while it runs: its plan's; else what the config declares)."""
        return list(self.plan.models) if self.plan else list(self.model_tasks)

    def to_stored(self) -> StoredDeployment:
        config = export_config(self.config, include_secrets=True)
        config.pop("api_key", None)  # kept only as api_key_hash
        return StoredDeployment(
            id=self.id, name=self.name, kind=self.kind, config=config, route=self.route,
            status=self.status.value, status_reason=self.status_reason, history=self.history,
            created_at=self.created_at, started_at=self.started_at, stopped_at=self.stopped_at,
            exit_code=self.exit_code, last_activity_at=self.last_activity_at, api_key_hash=self.api_key_hash,
        )


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
            self._spawn(self._release_left_replicas(self._release_on_start))
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
            self._fire(dep, Event.BUSY)

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

    def _fire(self, dep: Deployment, event: Event, reason: str | None = None) -> bool:
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
        self._fire(dep, Event.LAUNCH, "re-attaching its Ray replicas" if reattach else None)
        dep.task = asyncio.ensure_future(self._run(dep, reattach=reattach))

    async def _run(self, dep: Deployment, *, reattach: bool = False) -> None:
        try:
            if dep.on_ray:
                from .ray_run import RayRun

                dep.ray_run = RayRun(self, dep, self.ray)
                await dep.ray_run.run(reattach=reattach)
            else:
                await self._run_engine(dep)
        except Exception as exc:  # a bug must show as a failed deployment, not vanish
            log.exception("deployment %s crashed", dep.id)
            self._finish(dep, Event.CRASHED, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if not (dep.ray_run is not None and dep.ray_run.detached):
                dep.ray_run = None

    async def _run_engine(self, dep: Deployment) -> None:
        dep.port = free_port()
        dep.engine_key = secrets.token_urlsafe(24)
        socket_path = self._socket_path(dep)
        loop = asyncio.get_running_loop()
        progress = dep.progress

        def downloaded(done: int, total: int | None) -> None:  # from the planning thread
            if progress is not None:
                loop.call_soon_threadsafe(progress.downloaded, done, total, time.time())

        ctx = LaunchContext(port=dep.port, engine_key=dep.engine_key, work_dir=dep.work_dir, settings=self.settings,
                            socket_path=socket_path, on_download=downloaded)
        engine = self.engine(dep.kind)
        try:
            plan = await loop.run_in_executor(None, engine.plan, dep.config, ctx)
        except (EngineUnavailable, ModelNotFound, FileNotFoundError, ValueError) as exc:
            self._finish(dep, Event.CRASHED, f"cannot launch: {exc}")
            return
        if dep.ending is not None:  # stopped while planning
            self._finish(dep, dep.ending.outcome, dep.ending.reason)
            return
        dep.plan = plan
        dep.listen = plan.listen or EngineAddress(port=dep.port)
        dep.log.set_secrets(plan.secrets + [dep.engine_key])
        for name, content in plan.files.items():
            path = dep.work_dir / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(content)
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        env.update(plan.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        dep.log.append(f"[modeldeploy] starting {Path(plan.argv[0]).name} on {dep.listen.describe()}")
        for note in plan.notes:
            dep.log.append(f"[modeldeploy] note: {note}")
        if progress is not None:
            progress.enter(STARTING, time.time())
        try:
            handle = await self.placement.start(plan.argv, env, dep.work_dir, grace_s=self.stop_grace_s)
        except OSError as exc:
            self._finish(dep, Event.CRASHED, f"cannot start the engine: {exc.strerror or exc}")
            return
        dep.process = handle
        pump = asyncio.ensure_future(self._pump(dep, handle))
        phase = "loading"
        if await self._wait_healthy(dep, handle, plan):
            phase = "serving"
            dep.log.append(f"[modeldeploy] healthy after {time.time() - (dep.started_at or time.time()):.1f} s: serving")
            dep.last_activity_at = time.time()
            phases = progress.finish(time.time()) if progress is not None else []
            dep.replicas = [Replica(id="local", address=dep.listen, engine_key=dep.engine_key, node=socket.gethostname(),
                                    node_ip="127.0.0.1", pid=handle.pid)]
            set_serving(dep.replicas[0])
            self._fire(dep, Event.READY)
            if phases and dep.history and dep.history[-1]["status"] == Status.ACTIVE.value:
                dep.history[-1]["phases"] = phases  # elapsed time per loading phase, kept in the status history
                self.store.save(dep.to_stored())
            dep.health_task = asyncio.ensure_future(self._watch_health(dep, handle, plan))
        elif handle.returncode is None and dep.ending is None:
            dep.log.append(f"[modeldeploy] not healthy within {self.health_timeout_s:g} s; stopping it")
            self._begin_stop(dep, Ending(f"not healthy within {self.health_timeout_s:g} s", Event.CRASHED,
                                         reason_from_log=True))
            await handle.terminate(self.stop_grace_s)
        code = await handle.wait()
        await pump
        if dep.health_task is not None:
            dep.health_task.cancel()
            dep.health_task = None
        for note in handle.notes:
            dep.log.append(f"[modeldeploy] {note}")
        dep.exit_code = code
        ending = dep.ending
        if ending is None:
            self._finish(dep, Event.CRASHED, failure_reason(code, dep.log.tail(8), during=phase))
        elif ending.reason_from_log:
            self._finish(dep, ending.outcome, failure_reason(code, dep.log.tail(8), during=phase))
        else:
            self._finish(dep, ending.outcome, ending.reason)

    async def _pump(self, dep: Deployment, handle: EngineHandle) -> None:
        patterns = dep.plan.progress if dep.plan else []
        async for line in handle.lines():
            dep.log.append(line)
            if dep.progress is not None and dep.status is Status.LOADING and patterns:
                dep.progress.line(patterns, line, time.time())

    def _socket_path(self, dep: Deployment) -> Path:
        """The engine's Unix socket: in its 0700 work folder, or a private temp folder if that path is too long."""
        path = dep.work_dir / SOCKET_NAME
        if len(str(path)) > MAX_SOCKET_PATH:
            path = Path(tempfile.mkdtemp(prefix="md-")) / SOCKET_NAME  # mkdtemp makes it 0700
        if path.exists() or path.is_symlink():
            path.unlink()
        return path

    async def _probe(self, dep: Deployment, plan: LaunchPlan, timeout: float) -> bool:
        """One health request to the engine: True when it answered 200."""
        if dep.listen is None:
            return False
        try:
            response = await self.engine_http.request(dep.listen, dep.engine_key, "GET", plan.health_path, timeout=timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _watch_health(self, dep: Deployment, handle: EngineHandle, plan: LaunchPlan) -> None:
        """While serving: probe health; unhealthy after missed probes, serving again on an answer, ended when hung."""
        misses = 0
        unhealthy_since: float | None = None
        while handle.returncode is None and dep.ending is None:
            await asyncio.sleep(self.probe_interval_s)
            if dep.ending is not None or handle.returncode is not None:
                return
            if await self._probe(dep, plan, self.probe_timeout_s):
                misses = 0
                if dep.status is Status.UNHEALTHY:
                    dep.log.append("[modeldeploy] health checks answered again: serving")
                    unhealthy_since = None
                    self._fire(dep, Event.PROBE_OK)
                continue
            misses += 1
            if misses == self.probe_failures:
                reason = f"no answer to {misses} health checks in a row"
                if self._fire(dep, Event.PROBE_FAILED, reason):
                    unhealthy_since = time.monotonic()
                    dep.log.append(f"[modeldeploy] unhealthy: {reason}; requests get 503 until it answers")
            if unhealthy_since is not None and time.monotonic() - unhealthy_since >= self.unhealthy_limit_s:
                reason = f"the engine stopped answering health checks for {self.unhealthy_limit_s:g} s and was stopped"
                dep.log.append(f"[modeldeploy] {reason}")
                self._begin_stop(dep, Ending(reason, Event.CRASHED))
                await handle.terminate(self.stop_grace_s)
                return

    async def _wait_healthy(self, dep: Deployment, handle: EngineHandle, plan: LaunchPlan) -> bool:
        deadline = time.monotonic() + self.health_timeout_s
        delay = 0.1
        exited = asyncio.ensure_future(handle.wait())
        try:
            while time.monotonic() < deadline:
                if exited.done() or dep.ending is not None:
                    return False
                if await self._probe(dep, plan, 2.0):
                    return True
                await asyncio.wait([exited], timeout=delay)  # back off, but notice an exit at once
                delay = min(delay * 1.5, 1.0)
            return False
        finally:
            if not exited.done():
                exited.cancel()

    def _begin_stop(self, dep: Deployment, ending: Ending) -> None:
        dep.ending = ending
        self._fire(dep, Event.STOP, ending.reason if ending.outcome is not Event.CRASHED else None)

    async def _stop(self, dep: Deployment, reason: str, outcome: Event = Event.EXITED) -> None:
        """Stop the engine and await the end of its run (the state then is `outcome`'s)."""
        if not dep.status.live:
            return
        if dep.status is Status.STOPPING:
            if dep.task is not None:
                await asyncio.gather(dep.task, return_exceptions=True)
            return
        if dep.process is None and dep.status is Status.SLEEPING and dep.ray_run is None:
            # Parked (its engine was stopped to free memory): nothing runs, so it just stops.
            self._fire(dep, Event.STOP, reason)
            self._fire(dep, Event.EXITED, reason)
            return
        self._begin_stop(dep, Ending(reason, outcome))
        if dep.process is not None:
            await dep.process.terminate(self.stop_grace_s)
        if dep.task is not None:
            await asyncio.gather(dep.task, return_exceptions=True)

    def _finish(self, dep: Deployment, event: Event, reason: str) -> None:
        dep.stopped_at = time.time()
        dep.in_flight = 0
        dep.process = None
        dep.replicas = []
        if dep.listen is not None:
            self._spawn(self.engine_http.forget(dep.listen))
            if dep.listen.socket_path:
                Path(dep.listen.socket_path).unlink(missing_ok=True)
        delay = None
        if event is Event.CRASHED and dep.exit_code is not None:  # the engine ran, and crashed
            delay, reason = self._crash_policy(dep, reason)
        if not self._fire(dep, event, reason) and event is not Event.CRASHED:
            self._fire(dep, Event.CRASHED, reason)  # a state that cannot end that way still ends
        dep.log.append(f"[modeldeploy] {dep.status.value}: {reason.splitlines()[0]}")
        dep.ending = None
        dep.log.close_followers()
        if delay is not None:
            self._spawn(self._restart_later(dep, delay, dep.started_at))

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

    def _spawn(self, coro: Any) -> None:
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
        calls = dep.plan.sleep_calls if dep.plan else []
        if calls:
            async with dep.wake_lock:
                if dep.in_flight or dep.status not in (Status.ACTIVE, Status.IDLE):
                    return
                self._fire(dep, Event.QUIET)  # the idle limit passed: it is idle, whatever the report interval
                try:
                    await self._engine_calls(dep, calls)
                except (httpx.HTTPError, RuntimeError) as exc:
                    dep.log.append(f"[modeldeploy] could not put the engine to sleep ({exc}); stopping it")
                    await self._stop(dep, reason)
                    return
                dep.log.append(f"[modeldeploy] {reason}: engine put to sleep; the next request wakes it")
                self._fire(dep, Event.SLEPT, "memory freed until the next request")
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
            if dep.status is not Status.SLEEPING:
                return  # another request woke it while this one waited
            if dep.ray_run is not None:
                self._fire(dep, Event.WAKE)
                if await dep.ray_run.wake():
                    dep.last_activity_at = time.time()
                    self._fire(dep, Event.WOKE)
                elif dep.ending is None:
                    await self._stop(dep, "no replica could start for an incoming request: "
                                          + dep.ray_run._pending_reasons(), Event.CRASHED)
                return
            if dep.process is not None:
                self._fire(dep, Event.WAKE)
                started = time.monotonic()
                try:
                    await self._engine_calls(dep, dep.plan.wake_calls if dep.plan else [])
                except (httpx.HTTPError, RuntimeError) as exc:
                    dep.log.append(f"[modeldeploy] could not wake the engine ({exc}); stopping it")
                    await self._stop(dep, f"could not wake the engine: {exc}", Event.CRASHED)
                    return
                dep.log.append(f"[modeldeploy] woken in {time.monotonic() - started:.1f} s")
                dep.last_activity_at = time.time()
                self._fire(dep, Event.WOKE)
                return
            dep.log.append("[modeldeploy] relaunching for an incoming request")
            self._start(dep)
            await self.wait_for(dep, (Status.ACTIVE, Status.IDLE, Status.FAILED, Status.STOPPED), self.health_timeout_s)


    async def _engine_calls(self, dep: Deployment, calls: list[Any]) -> None:
        """Make engine control requests (EngineCall: method, path, params, json)."""
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
            await self._engine_calls(dep, calls)
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
                self._fire(dep, Event.BUSY if status is Status.ACTIVE else Event.QUIET)
