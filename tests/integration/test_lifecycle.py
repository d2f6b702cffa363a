"""Every transition of a deployment's state machine, driven in seconds through a fake engine.

The supervisor is the real one (placement, guardian, health probes, idle ticker, store); only
the engine is the small fake server of `tests/support/fake_engine.py`, injected through the
supervisor's engine registry.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from jupyter_modeldeploy.config import parse_config
from jupyter_modeldeploy.config.warm_hours import WarmWindow
from jupyter_modeldeploy.supervisor import Deployment, Status, Supervisor
from tests.support.fake_engine import FakeEngine

pytestmark = pytest.mark.integration


def make_supervisor(tmp_path: Path, engine: FakeEngine, **kwargs: float) -> Supervisor:
    options = {"tick_s": 0.1, "probe_interval_s": 0.2, "probe_timeout_s": 0.5, "probe_failures": 2,
               "unhealthy_limit_s": 30.0, "stop_grace_s": 2.0, "health_timeout_s": 20.0, **kwargs}
    return Supervisor(tmp_path / "state", engines={"llamacpp": engine}, **options)  # type: ignore[arg-type]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[list[Supervisor]]:
    made: list[Supervisor] = []
    yield made
    for supervisor in made:
        await supervisor.shutdown()


async def launch(made: list[Supervisor], tmp_path: Path, engine: FakeEngine, *, start_ticker: bool = True,
                 supervisor_options: dict[str, float] | None = None, **fields: object) -> tuple[Supervisor, Deployment]:
    supervisor = make_supervisor(tmp_path, engine, **(supervisor_options or {}))
    made.append(supervisor)
    if start_ticker:
        await supervisor.start()
    config = parse_config({"kind": "llamacpp", "name": "fake", "model": "m.gguf", **fields})
    dep = await supervisor.launch(config)
    return supervisor, dep


def statuses(dep: Deployment) -> list[str]:
    return [h["status"] for h in dep.history]


async def engine_get(supervisor: Supervisor, dep: Deployment, path: str, method: str = "GET") -> httpx.Response:
    assert dep.address is not None
    return await supervisor.engine_http.request(dep.address, dep.engine_key, method, path)


async def test_launch_serves_then_goes_idle_and_active(running: list[Supervisor], tmp_path: Path) -> None:
    supervisor, dep = await launch(running, tmp_path, FakeEngine(health_delay_s=0.5),
                                   last_action_report_interval_s=0.3)
    assert dep.status is Status.LOADING
    assert await supervisor.wait_for(dep, {Status.ACTIVE}, 15)
    assert await supervisor.wait_for(dep, {Status.IDLE}, 5)
    supervisor.request_started(dep)
    assert dep.status is Status.ACTIVE
    supervisor.request_finished(dep)
    assert await supervisor.wait_for(dep, {Status.IDLE}, 5)
    assert statuses(dep)[:3] == ["loading", "active", "idle"]
    stored = {row.id: row for row in supervisor.store.load_all()}[dep.id]
    assert stored.status == "idle"


async def test_stop_while_loading_ends_stopped(running: list[Supervisor], tmp_path: Path) -> None:
    supervisor, dep = await launch(running, tmp_path, FakeEngine(health_delay_s=60))
    await asyncio.sleep(0.5)
    started = time.monotonic()
    await supervisor.stop(dep.id, "stopped by the test")
    assert dep.status is Status.STOPPED and time.monotonic() - started < 5
    assert statuses(dep) == ["loading", "stopping", "stopped"]
    assert dep.status_reason == "stopped by the test"


async def test_crash_while_loading_fails_with_the_exit(running: list[Supervisor], tmp_path: Path) -> None:
    supervisor, dep = await launch(running, tmp_path, FakeEngine(crash_while_loading=3))
    assert await supervisor.wait_for(dep, {Status.FAILED}, 15)
    assert dep.status_reason is not None and "exited with code 3 while loading" in dep.status_reason
    assert "failing on purpose" in dep.status_reason  # the engine's last lines


async def test_crash_while_serving_fails(running: list[Supervisor], tmp_path: Path) -> None:
    supervisor, dep = await launch(running, tmp_path, FakeEngine())
    assert await supervisor.wait_for(dep, {Status.ACTIVE, Status.IDLE}, 15)
    await engine_get(supervisor, dep, "/fake/crash?code=7", "POST")
    assert await supervisor.wait_for(dep, {Status.FAILED}, 10)
    assert "exited with code 7 while serving" in (dep.status_reason or "")
    assert dep.address is None
    await supervisor.relaunch(dep.id)
    assert await supervisor.wait_for(dep, {Status.ACTIVE, Status.IDLE}, 15)


async def test_hung_engine_unhealthy_then_failed(running: list[Supervisor], tmp_path: Path) -> None:
    supervisor, dep = await launch(running, tmp_path, FakeEngine(), supervisor_options={"unhealthy_limit_s": 1.5})
    assert await supervisor.wait_for(dep, {Status.ACTIVE, Status.IDLE}, 15)
    await engine_get(supervisor, dep, "/fake/hang", "POST")
    assert await supervisor.wait_for(dep, {Status.UNHEALTHY}, 5)
    assert await supervisor.wait_for(dep, {Status.FAILED}, 15)
    assert "stopped answering health checks" in (dep.status_reason or "")
    assert statuses(dep)[-3:] == ["unhealthy", "stopping", "failed"]


async def test_stopped_engine_recovers_from_unhealthy(running: list[Supervisor], tmp_path: Path) -> None:
    supervisor, dep = await launch(running, tmp_path, FakeEngine())
    assert await supervisor.wait_for(dep, {Status.ACTIVE, Status.IDLE}, 15)
    engine_pid = next(int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == dep.process.pid)
    os.kill(engine_pid, signal.SIGSTOP)
    try:
        assert await supervisor.wait_for(dep, {Status.UNHEALTHY}, 5)
    finally:
        os.kill(engine_pid, signal.SIGCONT)
    assert await supervisor.wait_for(dep, {Status.ACTIVE}, 5)


async def test_sleep_when_idle_and_wake_for_a_request(running: list[Supervisor], tmp_path: Path) -> None:
    supervisor, dep = await launch(running, tmp_path, FakeEngine(sleep_mode=True), cpu_offload=True,
                                   idle_time_limit_hours=0.0003)  # about 1 s
    assert await supervisor.wait_for(dep, {Status.SLEEPING}, 15)
    assert (await engine_get(supervisor, dep, "/is_sleeping")).json() == {"is_sleeping": True}
    assert dep.process is not None  # asleep in its process
    await asyncio.gather(supervisor.ensure_ready(dep), supervisor.ensure_ready(dep))  # two requests, one wake-up
    assert dep.status is Status.ACTIVE
    assert (await engine_get(supervisor, dep, "/is_sleeping")).json() == {"is_sleeping": False}
    assert statuses(dep).count("waking") == 1


async def test_parked_without_sleep_mode_and_relaunched_for_a_request(running: list[Supervisor], tmp_path: Path) -> None:
    supervisor, dep = await launch(running, tmp_path, FakeEngine(), disk_swap=True, idle_time_limit_hours=0.0003)
    assert await supervisor.wait_for(dep, {Status.SLEEPING}, 15)
    assert dep.process is None and dep.address is None  # stopped to free memory
    started = time.monotonic()
    await supervisor.ensure_ready(dep)
    assert dep.status in (Status.ACTIVE, Status.IDLE) and time.monotonic() - started < 10
    assert statuses(dep)[-4:] in (["stopping", "sleeping", "loading", "active"],)


async def test_stopping_a_parked_deployment_and_shutdown(running: list[Supervisor], tmp_path: Path) -> None:
    supervisor, dep = await launch(running, tmp_path, FakeEngine(), disk_swap=True, idle_time_limit_hours=0.0003)
    assert await supervisor.wait_for(dep, {Status.SLEEPING}, 15)
    await supervisor.stop(dep.id)
    assert dep.status is Status.STOPPED


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


async def test_an_engine_that_dies_asleep_fails(running: list[Supervisor], tmp_path: Path) -> None:
    supervisor, dep = await launch(running, tmp_path, FakeEngine(sleep_mode=True), cpu_offload=True,
                                   idle_time_limit_hours=0.0003)
    assert await supervisor.wait_for(dep, {Status.SLEEPING}, 15)
    await engine_get(supervisor, dep, "/fake/crash?code=9", "POST")
    assert await supervisor.wait_for(dep, {Status.FAILED}, 10)
    assert "exited with code 9" in (dep.status_reason or "")
    await supervisor.ensure_ready(dep)  # a request for a failed deployment changes nothing
    assert dep.status is Status.FAILED


async def test_the_store_keeps_every_state_and_a_restart_lists_them_stopped(running: list[Supervisor],
                                                                          tmp_path: Path) -> None:
    supervisor, dep = await launch(running, tmp_path, FakeEngine(sleep_mode=True), cpu_offload=True,
                                   idle_time_limit_hours=0.0003, restart="never")  # always: test_restart_policy
    assert await supervisor.wait_for(dep, {Status.SLEEPING}, 15)
    assert {row.id: row for row in supervisor.store.load_all()}[dep.id].status == "sleeping"
    # The store as a server that died now would leave it, read by the next server.
    after = tmp_path / "after"
    (after / "state").mkdir(parents=True)
    with sqlite3.connect(supervisor.store.path) as source, sqlite3.connect(after / "state" / "deployments.sqlite") as copy:
        source.backup(copy)  # the file with its write-ahead log, as one consistent database
    again = make_supervisor(after, FakeEngine())
    again.load()
    restored = again.deployments[dep.id]
    assert restored.status is Status.STOPPED and "restarted" in (restored.status_reason or "")
    again.store.close()


# Warm windows (`warm_hours`): no sleep inside one; one asleep when a window begins is woken.

ALWAYS = {"days": "daily", "start": "00:00", "end": "00:00"}  # a whole day, every day


async def test_inside_a_warm_window_the_idle_limit_does_not_put_it_to_sleep(running: list[Supervisor],
                                                                           tmp_path: Path) -> None:
    supervisor, dep = await launch(running, tmp_path, FakeEngine(sleep_mode=True), cpu_offload=True,
                                   idle_time_limit_hours=0.0003, warm_hours=[ALWAYS])  # idle limit about 1 s
    assert await supervisor.wait_for(dep, {Status.ACTIVE, Status.IDLE}, 15)
    await asyncio.sleep(3)  # three idle limits, thirty ticks
    assert dep.status in (Status.ACTIVE, Status.IDLE) and "sleeping" not in statuses(dep)


async def test_a_deployment_asleep_when_a_window_begins_is_woken(running: list[Supervisor], tmp_path: Path) -> None:
    supervisor, dep = await launch(running, tmp_path, FakeEngine(sleep_mode=True), cpu_offload=True,
                                   idle_time_limit_hours=0.0003)
    assert await supervisor.wait_for(dep, {Status.SLEEPING}, 15)
    dep.config.warm_hours = [WarmWindow(**ALWAYS)]  # as if the clock reached the window's start
    assert await supervisor.wait_for(dep, {Status.ACTIVE, Status.IDLE}, 15)
    assert statuses(dep).count("waking") == 1
    assert any("a warm window began" in line for line in dep.log.tail(50))
