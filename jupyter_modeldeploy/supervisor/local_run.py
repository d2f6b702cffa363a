"""A deployment's run on this host: port, key and socket, the plan's files, the environment scrub, the start,
the console pump, health (until healthy, then while serving) and the end.

`LocalRun` talks back to the supervisor only through `RunHost` (`run.py`), as `RayRun` does.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import tempfile
import time
from pathlib import Path

import httpx

from ..engines import EngineAddress, EngineUnavailable, LaunchContext, LaunchPlan
from ..engines.hf import ModelNotFound
from ..engines.progress import STARTING
from .deployment import Deployment, Ending
from .placement import EngineHandle
from .replicas import LOCAL_REPLICA, Replica, set_serving
from .run import RunHost
from .state import Event, Status, failure_reason
from .wake import from_sleep

SOCKET_NAME = "engine.sock"  # llama-server takes a Unix socket for a host ending in '.sock'
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes
# Variables of the Jupyter server that an engine has no business seeing.
SCRUBBED_ENV = ("JUPYTER_TOKEN", "JPY_API_TOKEN", "JUPYTERHUB_API_TOKEN", "JPY_SESSION_NAME")


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRun:
    """One run of a deployment's engine on this host, from planning to its end."""

    def __init__(self, host: RunHost, dep: Deployment):
        self.host = host
        self.dep = dep
        self.detached = False  # an engine on this host never outlives the server

    async def start(self, *, reattach: bool = False) -> None:
        """Plan, start and serve the engine until it ends; the run's end is the host's to record (`finish`)."""
        dep, host = self.dep, self.host
        dep.port = free_port()
        dep.engine_key = secrets.token_urlsafe(24)
        socket_path = self._socket_path()
        loop = asyncio.get_running_loop()
        progress = dep.progress

        def downloaded(done: int, total: int | None) -> None:  # from the planning thread
            if progress is not None:
                loop.call_soon_threadsafe(progress.downloaded, done, total, time.time())

        ctx = LaunchContext(port=dep.port, engine_key=dep.engine_key, work_dir=dep.work_dir, settings=host.settings,
                            socket_path=socket_path, on_download=downloaded)
        engine = host.engine(dep.kind)
        try:
            plan = await loop.run_in_executor(None, engine.plan, dep.config, ctx)
        except (EngineUnavailable, ModelNotFound, FileNotFoundError, ValueError) as exc:
            host.finish(dep, Event.CRASHED, f"cannot launch: {exc}")
            return
        if dep.ending is not None:  # stopped while planning
            host.finish(dep, dep.ending.outcome, dep.ending.reason)
            return
        dep.plan = plan
        dep.listen = plan.listen or EngineAddress(port=dep.port)
        dep.log.set_secrets(plan.secrets + [dep.engine_key])
        for name, content in plan.files.items():
            path = dep.work_dir / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(content)
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        env.update(plan.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        dep.log.append(f"[modeldeploy] starting {Path(plan.argv[0]).name} on {dep.listen.describe()}")
        for note in plan.notes:
            dep.log.append(f"[modeldeploy] note: {note}")
        if progress is not None:
            progress.enter(STARTING, time.time())
        try:
            handle = await host.placement.start(plan.argv, env, dep.work_dir, grace_s=host.stop_grace_s)
        except OSError as exc:
            host.finish(dep, Event.CRASHED, f"cannot start the engine: {exc.strerror or exc}")
            return
        dep.process = handle
        pump = asyncio.ensure_future(self._pump(handle))
        phase = "loading"
        if await self._wait_healthy(handle, plan):
            phase = "serving"
            dep.log.append(f"[modeldeploy] healthy after {time.time() - (dep.started_at or time.time()):.1f} s: serving")
            dep.last_activity_at = time.time()
            phases = progress.finish(time.time()) if progress is not None else []
            dep.replicas = [Replica(id=LOCAL_REPLICA, address=dep.listen, engine_key=dep.engine_key, node=socket.gethostname(),
                                    node_ip="127.0.0.1", pid=handle.pid)]
            set_serving(dep.replicas[0])
            host.fire(dep, Event.READY)
            if phases and dep.history and dep.history[-1]["status"] == Status.ACTIVE.value:
                dep.history[-1]["phases"] = phases  # elapsed time per loading phase, kept in the status history
                host.store.save(dep.to_stored())
            dep.health_task = asyncio.ensure_future(self._watch_health(handle, plan))
        elif handle.returncode is None and dep.ending is None:
            dep.log.append(f"[modeldeploy] not healthy within {host.health_timeout_s:g} s; stopping it")
            host.begin_stop(dep, Ending(f"not healthy within {host.health_timeout_s:g} s", Event.CRASHED,
                                         reason_from_log=True))
            await handle.terminate(host.stop_grace_s)
        code = await handle.wait()
        await pump
        if dep.health_task is not None:
            dep.health_task.cancel()
            dep.health_task = None
        for note in handle.notes:
            dep.log.append(f"[modeldeploy] {note}")
        dep.exit_code = code
        ending = dep.ending
        if ending is None:
            host.finish(dep, Event.CRASHED, failure_reason(code, dep.log.tail(8), during=phase))
        elif ending.reason_from_log:
            host.finish(dep, ending.outcome, failure_reason(code, dep.log.tail(8), during=phase))
        else:
            host.finish(dep, ending.outcome, ending.reason)

    async def _pump(self, handle: EngineHandle) -> None:
        dep = self.dep
        patterns = dep.plan.progress if dep.plan else []
        async for line in handle.lines():
            dep.log.append(line)
            if dep.progress is not None and dep.status is Status.LOADING and patterns:
                dep.progress.line(patterns, line, time.time())

    def _socket_path(self) -> Path:
        """The engine's Unix socket: in its 0700 work folder, or a private temp folder if that path is too long."""
        path = self.dep.work_dir / SOCKET_NAME
        if len(str(path)) > MAX_SOCKET_PATH:
            path = Path(tempfile.mkdtemp(prefix="md-")) / SOCKET_NAME  # mkdtemp makes it 0700
        if path.exists() or path.is_symlink():
            path.unlink()
        return path

    async def probe(self, plan: LaunchPlan, timeout: float) -> bool:
        """One health request to the engine: True when it answered 200."""
        dep = self.dep
        if dep.listen is None:
            return False
        try:
            response = await self.host.engine_http.request(dep.listen, dep.engine_key, "GET", plan.health_path,
                                                           timeout=timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _watch_health(self, handle: EngineHandle, plan: LaunchPlan) -> None:
        """While serving: probe health; unhealthy after missed probes, serving again on an answer, ended when hung."""
        dep, host = self.dep, self.host
        misses = 0
        unhealthy_since: float | None = None
        while handle.returncode is None and dep.ending is None:
            await asyncio.sleep(host.probe_interval_s)
            if dep.ending is not None or handle.returncode is not None:
                return
            if await self.probe(plan, host.probe_timeout_s):
                misses = 0
                if dep.status is Status.UNHEALTHY:
                    dep.log.append("[modeldeploy] health checks answered again: serving")
                    unhealthy_since = None
                    host.fire(dep, Event.PROBE_OK)
                continue
            misses += 1
            if misses == host.probe_failures:
                reason = f"no answer to {misses} health checks in a row"
                if host.fire(dep, Event.PROBE_FAILED, reason):
                    unhealthy_since = time.monotonic()
                    dep.log.append(f"[modeldeploy] unhealthy: {reason}; requests get 503 until it answers")
            if unhealthy_since is not None and time.monotonic() - unhealthy_since >= host.unhealthy_limit_s:
                reason = f"the engine stopped answering health checks for {host.unhealthy_limit_s:g} s and was stopped"
                dep.log.append(f"[modeldeploy] {reason}")
                host.begin_stop(dep, Ending(reason, Event.CRASHED))
                await handle.terminate(host.stop_grace_s)
                return

    async def _wait_healthy(self, handle: EngineHandle, plan: LaunchPlan) -> bool:
        dep, host = self.dep, self.host
        deadline = time.monotonic() + host.health_timeout_s
        delay = 0.1
        exited = asyncio.ensure_future(handle.wait())
        try:
            while time.monotonic() < deadline:
                if exited.done() or dep.ending is not None:
                    return False
                if await self.probe(plan, 2.0):
                    return True
                await asyncio.wait([exited], timeout=delay)  # back off, but notice an exit at once
                delay = min(delay * 1.5, 1.0)
            return False
        finally:
            if not exited.done():
                exited.cancel()

    # Universal Memory and the end ------------------------------------------------------------

    def can_sleep(self) -> bool:
        """Whether the engine declared sleep calls (vLLM's sleep mode): it frees memory and keeps running."""
        return bool(self.dep.plan and self.dep.plan.sleep_calls)

    async def sleep(self) -> str | None:
        """The engine's sleep calls; None when it sleeps, else why not."""
        plan = self.dep.plan
        try:
            await self.host.engine_calls(self.dep, plan.sleep_calls if plan else [])
        except (httpx.HTTPError, RuntimeError) as exc:
            return f"could not put the engine to sleep ({exc})"
        return None

    async def wake(self) -> None:
        """Before a request: if the engine sleeps, its wake calls (`wake.from_sleep`: one wake-up for the requests
        that wait; an engine that cannot wake is stopped as failed)."""
        await from_sleep(self.host, self.dep, self._wake_calls)

    async def _wake_calls(self) -> str | None:
        """The engine's wake calls; None when it serves again, else why not."""
        dep, plan = self.dep, self.dep.plan
        started = time.monotonic()
        try:
            await self.host.engine_calls(dep, plan.wake_calls if plan else [])
        except (httpx.HTTPError, RuntimeError) as exc:
            dep.log.append(f"[modeldeploy] could not wake the engine ({exc}); stopping it")
            return f"could not wake the engine: {exc}"
        dep.log.append(f"[modeldeploy] woken in {time.monotonic() - started:.1f} s")
        return None

    async def stop(self) -> None:
        """Terminate the engine's process group (SIGTERM, then SIGKILL after the grace period)."""
        if self.dep.process is not None:
            await self.dep.process.terminate(self.host.stop_grace_s)

    async def health(self) -> bool:
        """One health request now."""
        plan = self.dep.plan
        return plan is not None and await self.probe(plan, self.host.probe_timeout_s)
