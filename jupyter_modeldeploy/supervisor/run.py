"""What a deployment's run (`LocalRun` on this host, `RayRun` on a cluster) may ask of the supervisor that
started it: one narrow interface, so a run never reaches into the supervisor's private methods."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..engines import Engine, EngineSettings
    from .deployment import Deployment, Ending
    from .engine_http import EngineHttp
    from .placement import Placement
    from .state import Event
    from .store import Store


class RunHost(Protocol):
    """The supervisor as its runs see it: settings, the engine kinds, and the three ways a run reports."""

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

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine in the background, kept alive until it ends."""
        ...
