"""The restart policy with the real supervisor and the fake engine: back after a server restart, crash restarts, crash loops."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jupyter_modeldeploy.config import parse_config
from jupyter_modeldeploy.keys import hash_key
from jupyter_modeldeploy.supervisor import Deployment, Status, Supervisor
from jupyter_modeldeploy.supervisor.restart import RestartLimits
from tests.support.fake_engine import FakeEngine

pytestmark = pytest.mark.integration

SERVING = {Status.ACTIVE, Status.IDLE}
FAST = RestartLimits(base_delay_s=0.1, max_delay_s=0.5, max_restarts=3, window_s=120.0)


def make_supervisor(state: Path, engine: FakeEngine) -> Supervisor:
    return Supervisor(state, engines={"llamacpp": engine}, tick_s=0.1, probe_interval_s=0.2,  # type: ignore[dict-item]
                      probe_timeout_s=0.5, probe_failures=2, stop_grace_s=2.0, health_timeout_s=20.0,
                      restart_limits=FAST)


@pytest.fixture
async def made() -> AsyncIterator[list[Supervisor]]:
    supervisors: list[Supervisor] = []
    yield supervisors
    for supervisor in supervisors:
        await supervisor.shutdown()


async def started(made: list[Supervisor], state: Path, engine: FakeEngine | None = None) -> Supervisor:
    supervisor = make_supervisor(state, engine or FakeEngine())
    made.append(supervisor)
    await supervisor.start()
    return supervisor


async def serving(made: list[Supervisor], tmp_path: Path, engine: FakeEngine | None = None,
                  **fields: object) -> tuple[Supervisor, Deployment]:
    supervisor = await started(made, tmp_path / "state", engine)
    config = parse_config({"kind": "llamacpp", "name": "fake", "model": "m.gguf", "api_key": "sk-fixed-key-1",
                           "route": "fixed-route", **fields})
    dep = await supervisor.launch(config)
    assert await supervisor.wait_for(dep, SERVING, 15)
    return supervisor, dep


def engine_pid(dep: Deployment) -> int:
    """The engine process: the child of the reaper."""
    assert dep.process is not None
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == dep.process.pid:
                return int(entry)
    raise AssertionError("no engine process found under the reaper")


def copy_store(supervisor: Supervisor, state: Path) -> None:
    """The store as a server that died now would leave it."""
    state.mkdir(parents=True)
    with sqlite3.connect(supervisor.store.path) as source, sqlite3.connect(state / "deployments.sqlite") as copy:
        source.backup(copy)


async def test_always_brings_a_serving_deployment_back_after_the_server_died(made: list[Supervisor],
                                                                          tmp_path: Path) -> None:
    supervisor, dep = await serving(made, tmp_path)
    copy_store(supervisor, tmp_path / "after")
    again = await started(made, tmp_path / "after")
    back = again.deployments[dep.id]
    assert back.status is Status.LOADING
    assert await again.wait_for(back, SERVING, 15)
    assert back.route == "fixed-route" and back.api_key_hash == hash_key("sk-fixed-key-1")
    assert again.by_route("fixed-route") is back
    reasons = [h["reason"] or "" for h in back.history]
    assert any("relaunching (restart: always)" in r for r in reasons)


async def test_always_brings_it_back_after_a_clean_shutdown(made: list[Supervisor], tmp_path: Path) -> None:
    supervisor, dep = await serving(made, tmp_path)
    await supervisor.shutdown()
    made.remove(supervisor)
    assert supervisor.deployments[dep.id].status is Status.STOPPED
    again = await started(made, tmp_path / "state")
    assert await again.wait_for(again.deployments[dep.id], SERVING, 15)


async def test_a_deployment_stopped_by_the_user_stays_stopped(made: list[Supervisor], tmp_path: Path) -> None:
    supervisor, dep = await serving(made, tmp_path)
    await supervisor.stop(dep.id)
    await supervisor.shutdown()
    made.remove(supervisor)
    again = await started(made, tmp_path / "state")
    assert again.deployments[dep.id].status is Status.STOPPED
    assert again.deployments[dep.id].status_reason == "stopped by the user"


@pytest.mark.parametrize("policy", ["never", "on-failure"])
async def test_never_and_on_failure_list_it_stopped_after_a_restart(made: list[Supervisor], tmp_path: Path,
                                                                    policy: str) -> None:
    supervisor, dep = await serving(made, tmp_path, restart=policy)
    copy_store(supervisor, tmp_path / "after")
    again = await started(made, tmp_path / "after")
    restored = again.deployments[dep.id]
    assert restored.status is Status.STOPPED
    assert "relaunch to serve again" in (restored.status_reason or "")


async def test_always_parks_a_sleeping_deployment(made: list[Supervisor], tmp_path: Path) -> None:
    supervisor, dep = await serving(made, tmp_path, FakeEngine(sleep_mode=True), cpu_offload=True,
                                    idle_time_limit_hours=0.0003)
    assert await supervisor.wait_for(dep, {Status.SLEEPING}, 15)
    copy_store(supervisor, tmp_path / "after")
    again = await started(made, tmp_path / "after")
    parked = again.deployments[dep.id]
    assert parked.status is Status.SLEEPING and parked.process is None
    await again.ensure_ready(parked)  # a request relaunches it
    assert parked.status in SERVING


async def test_on_failure_restarts_an_engine_killed_from_outside(made: list[Supervisor], tmp_path: Path) -> None:
    supervisor, dep = await serving(made, tmp_path, restart="on-failure")
    first = engine_pid(dep)
    os.kill(first, signal.SIGKILL)
    assert await supervisor.wait_for(dep, {Status.FAILED}, 10)
    assert "killed by signal 9" in (dep.status_reason or "") and "restarting in" in (dep.status_reason or "")
    assert await supervisor.wait_for(dep, SERVING, 15)
    assert engine_pid(dep) != first
    assert [h["status"] for h in dep.history][-3:] in (["failed", "loading", "active"], ["loading", "active", "idle"])


async def test_never_leaves_a_crashed_engine_failed(made: list[Supervisor], tmp_path: Path) -> None:
    supervisor, dep = await serving(made, tmp_path, restart="never")
    os.kill(engine_pid(dep), signal.SIGKILL)
    assert await supervisor.wait_for(dep, {Status.FAILED}, 10)
    assert "restarting" not in (dep.status_reason or "")
    assert not await supervisor.wait_for(dep, {Status.LOADING}, 1.0)


async def test_a_crash_loop_gives_up_into_failed_saying_so(made: list[Supervisor], tmp_path: Path) -> None:
    supervisor = await started(made, tmp_path / "state", FakeEngine(crash_while_loading=3))
    dep = await supervisor.launch(parse_config({"kind": "llamacpp", "name": "loop", "model": "m.gguf",
                                                "restart": "on-failure"}))

    async def settled() -> bool:
        while not (dep.status is Status.FAILED and "crash loop" in (dep.status_reason or "")):
            if not await supervisor.wait_for(dep, {Status.LOADING}, 10) or not await supervisor.wait_for(
                    dep, {Status.FAILED}, 10):
                return False
        return True

    assert await settled()
    assert "3 crashes within 120 s; not restarting again (restart: on-failure)" in (dep.status_reason or "")
    assert "exited with code 3" in (dep.status_reason or "")
    assert [h["status"] for h in dep.history].count("loading") == FAST.max_restarts
    assert not await supervisor.wait_for(dep, {Status.LOADING}, 1.0)
    await supervisor.relaunch(dep.id)  # a relaunch by hand counts afresh: the next crash is restarted again
    assert await supervisor.wait_for(dep, {Status.FAILED}, 10)
    assert "restarting in 0.1 s (restart 1 of" in (dep.status_reason or "")
