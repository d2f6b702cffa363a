"""Where an engine process runs, behind one small interface.

The supervisor asks a `Placement` to start a launch plan and gets an `EngineHandle` back: the
engine's console lines, its exit, and a way to end it. `LocalPlacement` runs it on this host
under the guardian (`reaper.py`) in its own process group; a remote placement (a cluster) is
another implementation of the same two classes, with no change to the supervisor.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from . import reaper
from .guardian import kill_group, process_exited


class EngineHandle(Protocol):
    """A started engine."""

    pid: int | None
    returncode: int | None
    notes: list[str]  # what the placement had to do beside (cleaning up after a killed guardian)

    def lines(self) -> AsyncIterator[str]:
        """The engine's console, line by line, until it closes."""
        ...

    async def wait(self) -> int:
        """Wait for the engine to end; its exit code (negative: the signal)."""
        ...

    async def terminate(self, grace_s: float) -> None:
        """Ask the engine to stop, and force it after `grace_s`."""
        ...


class Placement(Protocol):
    """Starts engines somewhere."""

    async def start(self, argv: list[str], env: dict[str, str], cwd: Path, *, grace_s: float) -> EngineHandle:
        """Start `argv`; raises OSError when it cannot be started."""
        ...


class LocalProcess:
    """An engine under the guardian, in its own process group on this host."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self._proc = proc
        self.pid: int | None = proc.pid
        self.notes: list[str] = []
        self._watch = asyncio.ensure_future(self._watch_guardian())

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def _watch_guardian(self) -> None:
        """When the guardian exits, kill what is left of its group (all of it, if it was killed outright).

        Until then `wait()` cannot return: an orphaned engine keeps the console pipe open.
        """
        await process_exited(self._proc.pid)
        left = kill_group(self._proc.pid)
        if left:
            self.notes.append(f"the guardian process ended and left {left} engine process(es) running: killed")

    async def lines(self) -> AsyncIterator[str]:
        stdout = self._proc.stdout
        assert stdout is not None
        while True:
            try:
                line = await stdout.readline()
            except ValueError:  # a line longer than the stream limit
                line = (await stdout.read(1 << 16)) or b""
            if not line:
                return
            yield line.decode("utf-8", errors="replace")

    async def wait(self) -> int:
        return await self._proc.wait()

    async def terminate(self, grace_s: float) -> None:
        """SIGTERM to the guardian (which stops the group), then SIGKILL to the group."""
        if self._proc.returncode is not None:
            return
        try:
            self._proc.terminate()
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(self._proc.wait(), timeout=grace_s + 5)
        except asyncio.TimeoutError:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await self._proc.wait()


class LocalPlacement:
    """Runs engines on this host: a guardian per engine, its own process group, a parent-death signal."""

    async def start(self, argv: list[str], env: dict[str, str], cwd: Path, *, grace_s: float) -> LocalProcess:
        guarded = [sys.executable, reaper.__file__, str(grace_s), "--", *argv]
        proc = await asyncio.create_subprocess_exec(
            *guarded,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=str(cwd),
            start_new_session=True,
            limit=1 << 20,
        )
        return LocalProcess(proc)
