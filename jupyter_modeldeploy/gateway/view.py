"""What admission and the relay read of a deployment and a key: the gateway's view, apart from the supervisor.

The Jupyter server builds views from its deployments and keys (`view_of`, `key_view`) and publishes
them to the gateway worker (`feed`); the worker admits with them exactly as the server admits with
the deployments themselves: a view has the attributes admission and the handler read, by the same
names. A view carries no process handle, task or log: only facts, so it can cross to the worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from ..engines import LaunchPlan
from ..supervisor.deployment import Deployment
from ..supervisor.replicas import Replica
from ..supervisor.state import Status
from .tokens import TokenInfo

#: A replica's facts the gateway routes by; counters and stats are the worker's own. The reason first: it is
#: in place when a change of state or address tells the replica's watchers (`Replica.watch`).
REPLICA_FACTS = ("reason", "address", "engine_key", "state", "serving_since", "started_at")


@dataclass(eq=True)
class DeploymentView:
    """One deployment as the gateway sees it."""

    id: str
    name: str
    route: str
    status: Status
    config: Any  # the deployment's config model (DeploymentBase)
    plan: LaunchPlan | None
    models: list[str]
    replicas: list[Replica]
    api_key_hash: str | None
    engine_key: str | None
    in_flight: int = field(default=0, compare=False)  # counted where the view is used (the worker)

    def update(self, newer: DeploymentView) -> None:
        """Take a newer view's facts, keeping this view's counters and replica objects (requests in
        flight hold them)."""
        for f in fields(self):
            if f.name not in ("in_flight", "replicas"):
                setattr(self, f.name, getattr(newer, f.name))
        known = {r.id: r for r in self.replicas}
        merged: list[Replica] = []
        for replica in newer.replicas:
            kept = known.get(replica.id)
            if kept is None:
                merged.append(replica)
                continue
            for name in REPLICA_FACTS:
                setattr(kept, name, getattr(replica, name))
            merged.append(kept)
        self.replicas = merged


@dataclass(frozen=True)
class KeyView:
    """A generated key as admission reads it: its hash (never the key) and its info."""

    hash: str
    info: TokenInfo

    def same(self, other: KeyView | None) -> bool:
        """Whether it says what `other` says (its last use aside)."""
        if other is None or other.hash != self.hash:
            return False
        mine, theirs = self.info.to_json(), other.info.to_json()
        mine.pop("last_used_at"), theirs.pop("last_used_at")
        return mine == theirs


#: What admission and the handler decide about: a deployment (on the server's loop) or its view (in the worker).
Served = Deployment | DeploymentView


def view_of(dep: Deployment) -> DeploymentView:
    """A deployment's view (its replicas copied with their routing facts only)."""
    replicas = [Replica(id=r.id, **{name: getattr(r, name) for name in REPLICA_FACTS}) for r in dep.replicas]
    return DeploymentView(
        id=dep.id, name=dep.name, route=dep.route, status=dep.status, config=dep.config, plan=dep.plan,
        models=list(dep.models), replicas=replicas, api_key_hash=dep.api_key_hash, engine_key=dep.engine_key,
    )
