"""A deployment's run, as the supervisor drives it (`Run`: `LocalRun` on this host, `RayRun` on a cluster,
`ParkedRun` while its engine is stopped to free memory), and what a run may ask of the supervisor that
started it (`RunHost`): two narrow interfaces, so the supervisor never branches on where (or whether) a
deployment runs and a run never reaches into its private methods; and what the supervisor's helpers for
idle time and adapters, and a parked run, ask of it (`DeploymentHost`)."""

from __future__ import annotations

from collections.abc import Collection, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..engines import Engine, EngineSettings
    from ..engines.base import EngineCall
    from .deployment import Deployment, Ending
    from .engine_http import EngineHttp
    from .placement import Placement
    from .signals import DeploymentChange, Signal
    from .state import Event, Status
    from .store import Store


class Run(Protocol):
    """One run of a deployment, from its start to its end."""

    detached: bool  # the server shuts down and leaves it running, to take over at the next start

    async def start(self, *, reattach: bool = False) -> None:
        """The whole run: plan, start, serve; returns when it ended (the host records how, `finish`)."""
        ...

    def can_sleep(self) -> bool:
        """Whether it can free its memory while idle and keep running (`sleep`)."""
        ...

    async def sleep(self) -> str | None:
        """Free the engine's memory until the next request; None when done, else why not."""
        ...

    async def wake(self) -> None:
        """Before a request: serve again if it sleeps, holding the request until it does (or the run ended);
        nothing while it serves. Concurrent requests share one wake-up (`wake.py`)."""
        ...

    async def stop(self) -> None:
        """Ask the engine to end (the host set `dep.ending` first); the run then ends by itself."""
        ...

    async def health(self) -> bool:
        """One health check now: whether it answers."""
        ...


class RunHost(Protocol):
    """The supervisor as its runs see it: settings, the engine kinds, and the ways a run reports."""

    settings: EngineSettings
    placement: Placement
    engine_http: EngineHttp
    store: Store
    health_timeout_s: float
    stop_grace_s: float
    probe_interval_s: float
    probe_timeout_s: float
    probe_failures: int
    unhealthy_limit_s: float
    tick_s: float

    def engine(self, kind: str) -> Engine:
        """The engine of a deployment kind."""
        ...

    def fire(self, dep: Deployment, event: Event, reason: str | None = None) -> bool:
        """Move the deployment's state by an event; False when the state machine has no such move."""
        ...

    def begin_stop(self, dep: Deployment, ending: Ending) -> None:
        """A stop is under way: why, and the state the run ends in."""
        ...

    def finish(self, dep: Deployment, event: Event, reason: str) -> None:
        """The run ended: record it (and restart a crashed engine by its policy)."""
        ...

    async def stop_run(self, dep: Deployment, reason: str, outcome: Event) -> None:
        """Stop the deployment's run and await its end (the state then is `outcome`'s): a run that cannot
        serve again after a wake-up asks for its own end this way."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine in the background, kept alive until it ends."""
        ...

    async def engine_calls(self, dep: Deployment, calls: list[EngineCall]) -> None:
        """Make engine control requests (sleep, wake, adapters); RuntimeError when one is refused."""
        ...


class DeploymentHost(RunHost, Protocol):
    """The supervisor as its deployment-side helpers (`idle.py`, `adapters.py`) and a parked run see it: a run's
    host that also starts runs, awaits a state and announces changes."""

    changes: Signal[DeploymentChange]

    def start_run(self, dep: Deployment) -> None:
        """Start a new run of the deployment (LAUNCH, then the run in the background)."""
        ...

    async def wait_for(self, dep: Deployment, statuses: Collection[Status], timeout: float) -> bool:
        """Await one of `statuses` (True), or `timeout` seconds (False)."""
        ...

    async def ensure_ready(self, dep: Deployment) -> None:
        """Before a request: the deployment's run serves again if it sleeps (`Run.wake`)."""
        ...
