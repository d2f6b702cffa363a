"""A deployment as the supervisor keeps it: its record (config, status, engine, replicas), the stop under way
(`Ending`) and the error a command answers with (`DeploymentError`)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import DeploymentBase, export_config
from ..engines import EngineAddress, LaunchPlan
from .logbuffer import LogBuffer
from .placement import EngineHandle
from .progress import LoadProgress
from .replicas import Replica, ReplicaEvent
from .state import Event, Status
from .store import StoredDeployment

if TYPE_CHECKING:
    from .run import Run


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
    replica_events: list[ReplicaEvent] = field(default_factory=list)  # replicas lost, restarted, ended (this run)
    run: Run | None = None  # its run (`run.Run`: LocalRun, RayRun, or ParkedRun while parked); None when stopped
    reattach: bool = False  # at the next start: take over the Ray replicas a previous server left running
    progress: LoadProgress | None = None  # the phases of the current (or last) launch
    warm: bool = False  # inside a warm window (`warm_hours`) at the supervisor's last tick
    queue: dict[str, float] = field(default_factory=dict)  # its waiting line, as the gateway last said (`LineStats`)

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
    def ray_run(self) -> Any:
        """The run, when it is a Ray deployment's (its replicas, scaling and their reasons)."""
        return self.run if self.on_ray else None

    @property
    def on_ray(self) -> bool:
        """Whether its replicas run on a Ray cluster."""
        return bool(self.config.placement.on_ray)

    model_tasks: dict[str, str] = field(default_factory=dict)  # served name -> chat/embed/rerank (the engine's word)

    @property
    def models(self) -> list[str]:
        """Model names the engine serves (while it runs: its plan's; else what the config declares)."""
        return list(self.plan.models) if self.plan else list(self.model_tasks)

    def begin_run(self) -> None:
        """Clear what the last run left (its end, exit, engine, replicas) and start the clocks of a new one."""
        self.ending = None
        self.exit_code = None
        self.in_flight = 0
        self.started_at = time.time()
        self.stopped_at = None
        self.last_activity_at = time.time()
        self.plan = None
        self.progress = LoadProgress(started_at=self.started_at)
        self.replicas = []
        self.replica_events = []

    def to_stored(self) -> StoredDeployment:
        """The record as the store keeps it (the API key only as its hash)."""
        config = export_config(self.config, include_secrets=True)
        config.pop("api_key", None)  # kept only as api_key_hash
        return StoredDeployment(
            id=self.id, name=self.name, kind=self.kind, config=config, route=self.route,
            status=self.status.value, status_reason=self.status_reason, history=self.history,
            created_at=self.created_at, started_at=self.started_at, stopped_at=self.stopped_at,
            exit_code=self.exit_code, last_activity_at=self.last_activity_at, api_key_hash=self.api_key_hash,
        )
