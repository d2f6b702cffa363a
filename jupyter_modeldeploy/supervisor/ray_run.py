"""The run of a Ray deployment: its replicas started, watched, scaled and ended, as one state machine run.

The local target's run is one engine process; this one is a set of replica actors
(`ray_placement.py`). It fires the same events on the deployment (`state.py`): LAUNCH..READY
when the first replica serves, PROBE_FAILED / PROBE_OK when no replica / some replica is in
rotation, SLEPT when it scaled to zero and WAKE..WOKE when a request brings a replica back,
STOP..EXITED when it ends. Every second it asks each actor for its facts (a restarted actor
starts its engine anew, on the node Ray chose), probes each engine's health from this host,
pulls the replicas' console lines into the deployment's log, and applies the autoscaling
policy (`autoscale.py`) to the gateway's count of requests in flight.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import httpx

from ..config import export_config
from ..config.warm_hours import warm_now
from ..engines import EngineAddress, LaunchPlan
from .autoscale import ScaleState, decide
from .ray_placement import ClusterUnavailable, RayCallFailed, RayCluster, new_replica_name
from .replicas import Replica, ReplicaEvent, ReplicaState, set_down, set_serving
from .state import Event, Status
from .wake import from_sleep

if TYPE_CHECKING:
    from .deployment import Deployment
    from .run import RunHost

log = logging.getLogger(__name__)

STATS_EVERY = 5  # ticks between resource samples of each replica
EVENTS_KEPT = 100  # replica events a record keeps (the latest)
NODE_WATCH_S = 120.0  # how long the node of a lost replica is watched for Ray to report it dead


class RayRun:
    """Drives one Ray deployment from launch to its end."""

    def __init__(self, supervisor: RunHost, dep: Deployment, cluster: RayCluster):
        self.sup = supervisor
        self.dep = dep
        self.cluster = cluster
        self.actors: dict[str, Any] = {}  # replica id (the actor's name) -> actor handle
        self.incarnations: dict[str, str] = {}
        # Replicas whose current incarnation served and is not yet recorded lost: a replica is lost once an
        # incarnation, whichever sign comes first (a failed actor call, its engine's exit, Ray's restart).
        self._served: set[str] = set()
        self.log_marks: dict[str, int] = {}
        self.misses: dict[str, int] = {}
        self.failures: dict[str, str] = {}  # replicas that cannot start on their node: why
        self.scale = ScaleState()
        self.detached = False  # the Jupyter server shuts down and leaves the replicas running (re-attached later)
        self._ticks = 0
        self._removing: set[str] = set()
        # Nodes replicas were lost on, until Ray reports them dead or NODE_WATCH_S passed: id -> (ip, replica, since)
        self._lost_nodes: dict[str, tuple[str | None, str, float]] = {}

    @property
    def placement(self) -> Any:
        return self.dep.config.placement

    # The run -----------------------------------------------------------------------------

    async def start(self, *, reattach: bool = False) -> None:
        """The whole run; returns when the deployment stopped or failed."""
        dep, sup = self.dep, self.sup
        try:
            await self.cluster.connect(self.placement.ray_address)
        except ClusterUnavailable as exc:
            sup.finish(dep, Event.CRASHED, str(exc))
            return
        if dep.ending is not None:
            sup.finish(dep, dep.ending.outcome, dep.ending.reason)
            return
        adopted = await self._adopt() if reattach else 0
        if not adopted:
            dep.engine_key = secrets.token_urlsafe(24)
            dep.log.set_secrets([dep.engine_key, *self._config_secrets()])
            for _ in range(self.placement.replicas.at_launch):
                self._add_replica()
        dep.log.append(f"[modeldeploy] on the Ray cluster at {self.cluster.connected_to}: "
                       f"{len(self.actors)} replica(s){' re-attached' if adopted else ''}")
        if not await self._until_first_serving():
            return
        while dep.ending is None:
            await self._tick()
            if not self.actors and self._out_of_tries():
                await self._end(Event.CRASHED, "no replica could keep running: " + "; ".join(self.failures.values()))
                return
            try:
                await asyncio.wait_for(self._stopped(), self.sup.tick_s)
            except asyncio.TimeoutError:
                continue
        await self._end()

    def _config_secrets(self) -> list[str]:
        """The config's secrets to mask in the replicas' console lines (every kind has `hf_token`)."""
        token = self.dep.config.hf_token
        return [token.get_secret_value()] if token is not None else []

    async def _stopped(self) -> None:
        while self.dep.ending is None:
            await self.dep.changed.wait()

    async def _until_first_serving(self) -> bool:
        """Watch the replicas until one serves (READY); False when the run ended first (failed or stopped)."""
        dep, sup = self.dep, self.sup
        deadline = time.monotonic() + sup.health_timeout_s
        while dep.ending is None:
            await self._tick(scale=False)
            if any(r.in_rotation for r in dep.replicas):
                dep.log.append(f"[modeldeploy] a replica serves after {time.time() - (dep.started_at or time.time()):.1f} s")
                dep.last_activity_at = time.time()
                sup.fire(dep, Event.READY)
                return True
            if not self.actors:
                await self._end(Event.CRASHED, "no replica could start: " + "; ".join(self.failures.values()))
                return False
            if time.monotonic() > deadline:
                await self._end(Event.CRASHED, f"no replica became healthy within {sup.health_timeout_s:g} s "
                                               f"({self._pending_reasons()})")
                return False
            await asyncio.sleep(0.5)
        await self._end()
        return False

    def _out_of_tries(self) -> bool:
        """Whether so many replicas ended for good that starting more would only repeat the failure."""
        return len(self.failures) >= 2 * self.placement.replicas.max + 1

    def _pending_reasons(self) -> str:
        reasons = [f"{r.id}: {r.reason}" for r in self.dep.replicas if r.reason]
        return "; ".join(reasons) or "the cluster may lack the resources a replica asks for"

    # Replicas ----------------------------------------------------------------------------

    def _spec(self, replica_id: str) -> dict[str, Any]:
        settings = asdict(self.sup.settings)
        settings.pop("extra", None)
        return {
            "kind": self.dep.kind, "config": export_config(self.dep.config, include_secrets=True),
            "engine_key": self.dep.engine_key, "settings": settings, "deployment_id": self.dep.id,
            "replica_id": replica_id, "grace_s": self.sup.stop_grace_s,
        }

    def _add_replica(self) -> Replica:
        name = new_replica_name(self.dep.id)
        self.actors[name] = self.cluster.create(name, self._spec(name), self.placement)
        replica = Replica(id=name, engine_key=self.dep.engine_key, reason="waiting for Ray to place it")
        self.dep.replicas.append(replica)
        return replica

    async def _adopt(self) -> int:
        """Take over the replica actors a previous Jupyter server left running; how many."""
        found = await asyncio.get_running_loop().run_in_executor(None, self.cluster.named, self.dep.id)
        for name, actor in found.items():
            try:
                key = await self.cluster.call(actor, "engine_key")
            except RayCallFailed as exc:
                self.dep.log.append(f"[modeldeploy] replica {name} left by the previous server does not answer: {exc}")
                self.cluster.kill(actor)
                continue
            self.dep.engine_key = key
            self.actors[name] = actor
            self.dep.replicas.append(Replica(id=name, engine_key=key, reason="re-attached"))
        if self.actors:
            self.dep.log.set_secrets([self.dep.engine_key or "", *self._config_secrets()])
        return len(self.actors)

    async def _tick(self, *, scale: bool = True) -> None:
        self._ticks += 1
        replicas = [r for r in self.dep.replicas if r.id in self.actors and r.id not in self._removing]
        await asyncio.gather(*(self._watch(r) for r in replicas))
        if self._lost_nodes:
            await self._note_dead_nodes()
        self._deployment_health()
        if scale and self.dep.ending is None:
            self._autoscale()

    async def _watch(self, replica: Replica) -> None:
        """One look at a replica: its actor's facts, its engine's health, its new console lines."""
        actor = self.actors[replica.id]
        try:
            info = await self.cluster.call(actor, "start")
        except RayCallFailed as exc:
            if not exc.restarting:  # the engine cannot run on that node: this replica is done
                self._give_up(replica, str(exc))
                return
            if self._lost(replica, str(exc)):
                self.dep.log.append(f"[modeldeploy] replica {replica.id} out of rotation: {exc}")
            self._out(replica, str(exc))
            replica.address = None
            return
        self._facts(replica, info)
        if not self.dep.plan:
            await self._learn_plan(actor)
        await self._pull_logs(replica, actor)
        if self._ticks % STATS_EVERY == 0:
            try:
                replica.stats = await self.cluster.call(actor, "stats")
            except RayCallFailed:
                replica.stats = {}
        if info.get("returncode") is not None:
            reason = f"the engine exited with code {info['returncode']}; Ray restarts the replica"
            self._lost(replica, reason)
            self._out(replica, reason)
            return
        await self._probe(replica)

    def _facts(self, replica: Replica, info: dict[str, Any]) -> None:
        incarnation = info["incarnation"]
        known = self.incarnations.get(replica.id)
        if known != incarnation:
            if known is not None:
                # Ray may restart an actor before any call to the old one failed (a frozen node's actor can go on
                # answering until Ray declares the node dead): the served incarnation is lost all the same.
                self._lost(replica, f"Ray restarted the replica; it was on node {replica.node_ip}")
                replica.restarts += 1
                self.dep.log.append(f"[modeldeploy] replica {replica.id} restarted by Ray on node {info['node_ip']}")
                self._event(replica.id, "restarted", info["node"], info["node_ip"])
            self.incarnations[replica.id] = incarnation
            self.log_marks[replica.id] = 0
            replica.state = ReplicaState.STARTING
            replica.reason = "loading"
            replica.started_at = time.time()
        replica.node, replica.node_ip, replica.pid = info["node"], info["node_ip"], info["pid"]
        replica.address = EngineAddress(host=info["host"], port=info["port"]) if info.get("port") else None

    async def _learn_plan(self, actor: Any) -> None:
        try:
            plan: LaunchPlan | None = await self.cluster.call(actor, "plan")
        except RayCallFailed:
            return
        if plan is not None:
            self.dep.plan = plan

    async def _pull_logs(self, replica: Replica, actor: Any) -> None:
        try:
            mark, lines = await self.cluster.call(actor, "logs", self.log_marks.get(replica.id, 0))
        except RayCallFailed:
            return
        self.log_marks[replica.id] = mark
        short = replica.id.rsplit("-", 1)[-1]
        for line in lines:
            self.dep.log.append(f"[{short}] {line}")

    async def _probe(self, replica: Replica) -> None:
        plan = self.dep.plan
        if replica.address is None or plan is None:
            return
        try:
            response = await self.sup.engine_http.request(
                replica.address, replica.engine_key, "GET", plan.health_path, timeout=self.sup.probe_timeout_s
            )
            healthy = response.status_code == 200
        except httpx.HTTPError:
            healthy = False
        if healthy:
            self.misses[replica.id] = 0
            self._served.add(replica.id)
            if not replica.in_rotation:
                set_serving(replica)
                self.dep.log.append(f"[modeldeploy] replica {replica.id} serving on {replica.address.describe()}")
            return
        self.misses[replica.id] = self.misses.get(replica.id, 0) + 1
        if replica.state is ReplicaState.SERVING and self.misses[replica.id] >= self.sup.probe_failures:
            self._out(replica, f"no answer to {self.misses[replica.id]} health checks in a row")

    def _out(self, replica: Replica, reason: str) -> None:
        if replica.state is ReplicaState.SERVING:
            set_down(replica, reason)
        elif replica.state is not ReplicaState.STOPPING:
            replica.state = ReplicaState.DOWN if replica.address is not None else ReplicaState.STARTING
            replica.reason = reason

    def _give_up(self, replica: Replica, reason: str) -> None:
        """A replica whose engine cannot run where Ray placed it: ended, its reason kept."""
        self.dep.log.append(f"[modeldeploy] replica {replica.id} cannot start: {reason}")
        self._event(replica.id, "ended", replica.node, replica.node_ip, reason)
        self.failures[replica.id] = reason
        self.cluster.kill(self.actors.pop(replica.id))
        self.dep.replicas = [r for r in self.dep.replicas if r.id != replica.id]

    def _event(self, replica_id: str, event: str, node: str | None, node_ip: str | None,
               reason: str | None = None) -> None:
        events = self.dep.replica_events
        events.append(ReplicaEvent(time.time(), replica_id, event, node, node_ip, reason))
        del events[:-EVENTS_KEPT]

    def _lost(self, replica: Replica, reason: str) -> bool:
        """A replica that served failed: the record names its node and the time (once an incarnation); its node
        is watched until Ray says whether it went too. False when this incarnation never served or was recorded."""
        if replica.id not in self._served:
            return False
        self._served.discard(replica.id)
        self._event(replica.id, "lost", replica.node, replica.node_ip, reason)
        if replica.node is not None:
            self._lost_nodes[replica.node] = (replica.node_ip, replica.id, time.monotonic())
        return True

    async def _note_dead_nodes(self) -> None:
        """Record the nodes replicas were lost on that Ray now reports dead (once each)."""
        try:
            dead = await asyncio.get_running_loop().run_in_executor(None, self.cluster.dead_nodes)
        except Exception as exc:  # the cluster's state could not be read this tick: the next one tries again
            log.debug("cannot read the cluster's nodes: %s", exc)
            return
        now = time.monotonic()
        for node, (node_ip, replica_id, since) in list(self._lost_nodes.items()):
            if node in dead:
                self._event(replica_id, "node_gone", node, node_ip, "Ray reports the node dead")
                self.dep.log.append(f"[modeldeploy] node {node_ip} ({node[:12]}) is gone")
            elif now - since < NODE_WATCH_S:
                continue
            del self._lost_nodes[node]

    def unreachable(self, replica: Replica, reason: str) -> None:
        """The gateway could not connect to a replica: out of rotation now, back when a probe answers."""
        if set_down(replica, reason):
            self.dep.log.append(f"[modeldeploy] replica {replica.id} out of rotation: {reason}")

    def _deployment_health(self) -> None:
        dep, sup = self.dep, self.sup
        serving = any(r.in_rotation for r in dep.replicas)
        if dep.status in (Status.ACTIVE, Status.IDLE) and not serving and dep.replicas:
            sup.fire(dep, Event.PROBE_FAILED, "no replica is serving: " + self._pending_reasons())
        elif dep.status is Status.UNHEALTHY and serving:
            sup.fire(dep, Event.PROBE_OK)

    # Scaling -----------------------------------------------------------------------------

    def _autoscale(self) -> None:
        dep = self.dep
        if dep.status not in (Status.ACTIVE, Status.IDLE, Status.UNHEALTHY):
            return
        current = len([r for r in dep.replicas if r.id not in self._removing])
        now = time.time()
        counts = self.placement.replicas
        if counts.min == 0 and warm_now(dep.config.warm_hours, now):
            counts = counts.model_copy(update={"min": 1})  # a warm window: one replica stays up
        wanted = decide(current, dep.in_flight, now, self.scale, counts=counts,
                        policy=self.placement.autoscaling, idle_for_s=now - dep.last_activity_at)
        if wanted > current and self._out_of_tries():
            return
        if wanted > current:
            dep.log.append(f"[modeldeploy] scaling up to {wanted} replica(s) ({dep.in_flight} request(s) in flight)")
            for _ in range(wanted - current):
                self._add_replica()
        elif wanted < current:
            victim = min((r for r in dep.replicas if r.id not in self._removing),
                         key=lambda r: (r.in_rotation, r.in_flight))
            dep.log.append(f"[modeldeploy] scaling down to {wanted} replica(s)")
            self.sup.spawn(self._remove(victim))
            if wanted == 0:
                self.sup.fire(dep, Event.QUIET)
                self.sup.fire(dep, Event.SLEPT, "scaled to zero replicas: the next request starts one")

    async def _remove(self, replica: Replica, *, drain_s: float | None = None) -> None:
        """Out of rotation, its requests finished (up to `drain_s`), then its actor ended."""
        self._removing.add(replica.id)
        self._served.discard(replica.id)  # ended on purpose: not lost
        replica.state = ReplicaState.STOPPING
        deadline = time.monotonic() + (self.sup.stop_grace_s if drain_s is None else drain_s)
        while replica.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        actor = self.actors.pop(replica.id, None)
        if actor is not None:
            try:
                await self.cluster.call(actor, "stop", self.sup.stop_grace_s, timeout=self.sup.stop_grace_s + 10)
            except RayCallFailed as exc:
                log.debug("replica %s did not stop cleanly: %s", replica.id, exc)
            self.cluster.kill(actor)
        self.dep.replicas = [r for r in self.dep.replicas if r.id != replica.id]
        self._removing.discard(replica.id)
        if replica.address is not None:
            await self.sup.engine_http.forget(replica.address)

    async def wake(self) -> None:
        """Before a request: if it scaled to zero replicas, start one and hold the request until it serves
        (`wake.from_sleep`: one wake-up for the requests that wait; a run with no replica that serves is stopped
        as failed)."""
        await from_sleep(self.sup, self.dep, self._replica_back)

    async def _replica_back(self) -> str | None:
        """From zero replicas: start one and wait until it serves; None if it does, else why not."""
        if await self._replica_for_a_request():
            return None
        return "no replica could start for an incoming request: " + self._pending_reasons()

    def can_sleep(self) -> bool:
        """A Ray deployment frees memory by scaling to zero replicas (`replicas.min: 0`), on its own ticks."""
        return False

    async def sleep(self) -> str | None:
        """Not by the idle limit: says why (`can_sleep` is False)."""
        return "a Ray deployment scales to zero replicas instead (replicas.min: 0)"

    async def stop(self) -> None:
        """Nothing to signal: the run's own ticks see `dep.ending` and end every replica."""

    async def health(self) -> bool:
        """Whether a replica is in rotation now."""
        return any(r.in_rotation for r in self.dep.replicas)

    async def _replica_for_a_request(self) -> bool:
        """Start a replica if none is left and wait until one serves; True if one does."""
        dep = self.dep
        if not any(r.id not in self._removing for r in dep.replicas):
            dep.log.append("[modeldeploy] a request came: starting a replica")
            self._add_replica()
            self.scale.want_down_since = None
        deadline = time.monotonic() + self.sup.health_timeout_s
        while time.monotonic() < deadline and dep.ending is None:  # the run's own ticks watch the new replica
            if any(r.in_rotation for r in dep.replicas):
                return True
            if not self.actors:
                return False
            await asyncio.sleep(0.1)
        return False

    # The end -----------------------------------------------------------------------------

    async def _end(self, outcome: Event | None = None, reason: str | None = None) -> None:
        """Every replica ended and its actor released (unless detached), then the run's final state."""
        dep, sup = self.dep, self.sup
        if not self.detached:
            if outcome is not None and dep.ending is None:
                dep.log.append(f"[modeldeploy] {reason}")
            await asyncio.gather(*(self._remove(r, drain_s=0) for r in list(dep.replicas)), return_exceptions=True)
            left = await asyncio.get_running_loop().run_in_executor(None, self.cluster.named, dep.id)
            for actor in left.values():  # a replica created while stopping
                self.cluster.kill(actor)
        dep.replicas = []
        ending = dep.ending
        if outcome is not None and ending is None:
            sup.finish(dep, outcome, reason or "ended")
        elif ending is not None:
            sup.finish(dep, ending.outcome, ending.reason)
        else:
            sup.finish(dep, Event.EXITED, "ended")
