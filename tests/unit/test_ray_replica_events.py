"""A Ray replica's record of being lost: once an incarnation that served, whichever sign comes first.

The run is driven tick by tick over a scripted cluster (what each actor call answers) and an engine
whose health answers are scripted too; no Ray is needed to see which events the record gets.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from jupyter_modeldeploy.config import parse_config
from jupyter_modeldeploy.supervisor import Deployment
from jupyter_modeldeploy.supervisor.logbuffer import LogBuffer
from jupyter_modeldeploy.supervisor.ray_placement import RayCallFailed
from jupyter_modeldeploy.supervisor.ray_run import RayRun
from jupyter_modeldeploy.supervisor.replicas import Replica

REPLICA = "md-d1-aaaaaa"


class ScriptedCluster:
    """Answers `start` with the facts set on it (or raises the failure set on it); logs and stats are empty."""

    def __init__(self) -> None:
        self.facts: dict[str, Any] = {}
        self.failure: RayCallFailed | None = None

    async def call(self, actor: Any, method: str, *args: Any, timeout: float = 5.0) -> Any:
        if method == "start":
            if self.failure is not None:
                raise self.failure
            return dict(self.facts)
        return (0, []) if method == "logs" else {}

    def on(self, node: str, incarnation: str) -> None:
        self.failure = None
        self.facts = {"incarnation": incarnation, "node": node, "node_ip": f"ip-{node}", "pid": 1,
                      "host": "127.0.0.1", "port": 9, "returncode": None}


class ScriptedEngine:
    """The engine's health answer: 200 while `healthy`, a refused connection otherwise."""

    healthy = True

    async def request(self, *args: Any, **kwargs: Any) -> httpx.Response:
        if not self.healthy:
            raise httpx.ConnectError("refused")
        return httpx.Response(200)


def make_run(tmp_path: Path, placement: dict[str, Any] | None = None,
             **options: Any) -> tuple[RayRun, ScriptedCluster, ScriptedEngine]:
    """A Ray run of one replica (`placement`: the section's other settings; `options`: the config's)."""
    config = parse_config({"kind": "llamacpp", "name": "r", "model": "m.gguf", **options,
                           "placement": {"target": "ray", "replicas": {"min": 1, "max": 1}, **(placement or {})}})
    dep = Deployment(id="d1", config=config, route="r", work_dir=tmp_path, log=LogBuffer(tmp_path / "log"))
    dep.plan = SimpleNamespace(health_path="/health")  # type: ignore[assignment]
    dep.replicas = [Replica(id=REPLICA)]
    cluster, engine = ScriptedCluster(), ScriptedEngine()
    host = SimpleNamespace(engine_http=engine, probe_timeout_s=1.0, probe_failures=2)
    run = RayRun(host, dep, cluster)  # type: ignore[arg-type]
    run.actors[REPLICA] = object()
    return run, cluster, engine


def tick(run: RayRun) -> None:
    asyncio.run(run._watch(run.dep.replicas[0]))


def events(run: RayRun) -> list[tuple[str, str | None]]:
    return [(e.event, e.node) for e in run.dep.replica_events]


def test_a_replica_restarted_before_any_call_failed_is_recorded_lost_on_its_old_node(tmp_path: Path) -> None:
    """A frozen node's actor can answer until Ray declares the node dead and restarts it elsewhere: the
    served incarnation is lost all the same, on the node it served on, before the restart."""
    run, cluster, engine = make_run(tmp_path)
    cluster.on("a", "1")
    tick(run)
    engine.healthy = False
    tick(run)
    tick(run)  # out of rotation by its health checks, the actor still answering
    assert events(run) == []
    cluster.on("b", "2")
    tick(run)
    assert events(run) == [("lost", "a"), ("restarted", "b")]


@pytest.mark.parametrize("sign", ["call fails", "engine exits"])
def test_lost_once_an_incarnation_whatever_follows(tmp_path: Path, sign: str) -> None:
    run, cluster, _ = make_run(tmp_path)
    cluster.on("a", "1")
    tick(run)
    if sign == "call fails":
        cluster.failure = RayCallFailed("start: no answer within 5 s", restarting=True)
    else:
        cluster.facts["returncode"] = -9
    tick(run)
    tick(run)
    cluster.on("b", "2")
    tick(run)
    assert events(run) == [("lost", "a"), ("restarted", "b")]


def test_a_replica_that_never_served_is_not_recorded_lost(tmp_path: Path) -> None:
    run, cluster, engine = make_run(tmp_path)
    engine.healthy = False
    cluster.on("a", "1")
    tick(run)
    cluster.failure = RayCallFailed("start: the replica is restarting", restarting=True)
    tick(run)
    cluster.on("b", "2")
    tick(run)
    assert events(run) == [("restarted", "b")]
