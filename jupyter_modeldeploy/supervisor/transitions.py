"""The state-machine driver: a deployment's status moved by an event through the one transition table
(`state.transition`), and what fires on every move: the status history, the store, the wake-up of
everything awaiting a change (`wait_for`) and the `state` signal (`signals.DeploymentChange`).

Nothing else sets `dep.status` on a running server; the supervisor and its runs call `fire`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection

from .deployment import Deployment
from .signals import DeploymentChange, Signal
from .state import Event, InvalidTransition, Status, transition
from .store import Store

log = logging.getLogger(__name__)

HISTORY_LIMIT = 200  # status history entries kept per deployment


def record_history(dep: Deployment, status: Status, reason: str | None) -> None:
    """Add an entry to the deployment's status history (the newest HISTORY_LIMIT are kept)."""
    entry = {"status": status.value, "at": time.time(), "reason": reason}
    dep.history = (dep.history + [entry])[-HISTORY_LIMIT:]


class Transitions:
    """Applies events to deployments, saves them and tells whoever waits or listens."""

    def __init__(self, store: Store, changes: Signal[DeploymentChange]):
        self.store = store
        self.changes = changes

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
        record_history(dep, status, reason)
        self.store.save(dep.to_stored())
        changed, dep.changed = dep.changed, asyncio.Event()
        changed.set()  # wakes everything awaiting a change of this deployment
        self.changes.send(DeploymentChange("state", dep))
        return True

    @staticmethod
    async def wait_for(dep: Deployment, statuses: Collection[Status], timeout: float) -> bool:
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
