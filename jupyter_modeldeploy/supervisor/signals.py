"""Changes as signals with listeners: a deployment created, its state or models changed, it deleted (the
keys' own changes are `gateway.tokens.TokenChange`, sent on a `Signal` too).

Whoever must act on a change subscribes (`Signal.connect`) instead of being called by hand, and
any number may: the jupyter-ai registration and the keys of a deleted deployment clean up after
it, the metrics follow state changes, a gateway state feed can follow both. A listener that fails
is logged and the others still run: one bad listener cannot stop a deletion half way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

if TYPE_CHECKING:
    from .deployment import Deployment

log = logging.getLogger(__name__)

T = TypeVar("T")

DeploymentChangeKind = Literal["created", "state", "models", "deleted"]


@dataclass(frozen=True)
class DeploymentChange:
    """What happened to a deployment (`state`: its status or status reason; `models`: its served models)."""

    kind: DeploymentChangeKind
    deployment: Deployment


class Signal(Generic[T]):
    """A change any number of listeners hear, in the order they connected."""

    def __init__(self, name: str):
        self.name = name
        self._listeners: list[Callable[[T], None]] = []

    def connect(self, listener: Callable[[T], None]) -> Callable[[], None]:
        """Call `listener` with every change from now on; returns what disconnects it."""
        self._listeners.append(listener)

        def disconnect() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return disconnect

    def send(self, change: T) -> None:
        """Tell every listener; one that raises is logged and the rest still hear."""
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("a listener of %s failed", self.name)
