"""The replicas of a deployment, and which one takes the next request.

A local deployment has one replica (its engine on this host); a Ray deployment has between
`placement.replicas.min` and `max`, each an engine on a node Ray picked. The gateway asks
`pick()` for the serving replica with the fewest requests in flight, and reports a replica it
could not reach so that it leaves the rotation at once (`set_down`), before the next probe.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..engines import EngineAddress

LOCAL_REPLICA = "local"  # the id of the one replica of a deployment on this host
WATCHED = frozenset({"state", "address"})  # a replica's facts whose changes its watchers hear of


class ReplicaState(str, enum.Enum):
    """Where one replica is in its life."""

    STARTING = "starting"  # placed (or waiting for resources), its engine loading
    SERVING = "serving"  # in rotation
    DOWN = "down"  # not reachable: out of rotation until a probe answers or Ray restarts it
    STOPPING = "stopping"


@dataclass
class Replica:
    """One engine serving a deployment."""

    id: str  # stable for the replica's life (a Ray actor name, or "local")
    address: EngineAddress | None = None
    engine_key: str | None = None
    state: ReplicaState = ReplicaState.STARTING
    node: str | None = None  # the node's id (Ray) or this host's name
    node_ip: str | None = None
    pid: int | None = None
    started_at: float = field(default_factory=time.time)
    serving_since: float | None = None
    in_flight: int = 0
    requests: int = 0  # sent to it by the gateway
    restarts: int = 0  # times Ray brought it back after a failure
    reason: str | None = None  # why it is down or starting, when known
    stats: dict[str, float] = field(default_factory=dict)  # cpu_percent, memory_bytes of its engine

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in WATCHED:
            for watcher in list(self.__dict__.get("_watchers", ())):
                watcher(self)

    def watch(self, watcher: Callable[[Replica], None]) -> Callable[[], None]:
        """Call `watcher` after every change of the replica's state or address (a request waiting on it learns at
        once that it left); returns what ends the watch."""
        watchers: list[Callable[[Replica], None]] = self.__dict__.setdefault("_watchers", [])
        watchers.append(watcher)

        def unwatch() -> None:
            if watcher in watchers:
                watchers.remove(watcher)

        return unwatch

    def __getstate__(self) -> dict[str, Any]:
        """Its facts (a view crosses to the gateway worker), without the watchers of this process."""
        return {k: v for k, v in self.__dict__.items() if k != "_watchers"}

    @property
    def in_rotation(self) -> bool:
        """Whether the gateway may send it requests."""
        return self.state is ReplicaState.SERVING and self.address is not None

    def describe(self) -> dict[str, Any]:
        """Its facts for the deployment record (no key)."""
        return {
            "id": self.id, "state": self.state.value, "node": self.node, "node_ip": self.node_ip,
            "address": self.address.describe() if self.address else None, "pid": self.pid,
            "in_flight": self.in_flight, "requests": self.requests, "started_at": self.started_at,
            "serving_since": self.serving_since,
            "restarts": self.restarts, "reason": self.reason, **self.stats,
        }


@dataclass(frozen=True)
class ReplicaEvent:
    """Something that happened to a replica, for the deployment's record: which node, when, why.

    `lost`: it left the rotation because its actor or engine failed (its node is the one it was on);
    `node_gone`: Ray reports that node dead; `restarted`: Ray brought it back (its node is the new one);
    `ended`: it ended for good and the run replaces it.
    """

    at: float
    replica: str
    event: str
    node: str | None
    node_ip: str | None
    reason: str | None = None

    def describe(self) -> dict[str, Any]:
        """Its facts for the record."""
        return {"at": self.at, "replica": self.replica, "event": self.event, "node": self.node,
                "node_ip": self.node_ip, "reason": self.reason}


def pick(replicas: list[Replica], exclude: set[str] | frozenset[str] = frozenset()) -> Replica | None:
    """The serving replica with the fewest requests in flight; on a tie the one sent fewest so far (so
    one-at-a-time callers alternate), then the longest serving. None when none serves."""
    best: Replica | None = None
    for replica in replicas:
        if not replica.in_rotation or replica.id in exclude:
            continue
        if best is None or _load(replica) < _load(best):
            best = replica
    return best


def _load(replica: Replica) -> tuple[int, int, float]:
    return replica.in_flight, replica.requests, replica.serving_since or 0.0


def set_down(replica: Replica, reason: str) -> bool:
    """Take a replica out of rotation; False when it already was."""
    if replica.state is not ReplicaState.SERVING:
        return False
    replica.state = ReplicaState.DOWN
    replica.reason = reason
    return True


def set_serving(replica: Replica) -> None:
    """Put a replica (back) in rotation."""
    if replica.state is not ReplicaState.SERVING:
        replica.serving_since = time.time()
    replica.state = ReplicaState.SERVING
    replica.reason = None
