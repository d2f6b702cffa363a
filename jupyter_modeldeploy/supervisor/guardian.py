"""Watching a guardian process (`reaper.py`) from the supervisor's event loop.

`asyncio`'s `Process.wait()` returns only once the child has exited *and* every pipe to it
is closed. When the guardian is killed outright, its engine (which inherited the console
pipe) can live on and keep that pipe open, so `wait()` never returns. These helpers see the
guardian's own exit (a pidfd, where Linux has them) and kill whatever is left of its group.
"""

from __future__ import annotations

import asyncio
import os
import signal


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def process_exited(pid: int, *, poll_s: float = 0.2) -> None:
    """Return once process `pid` has exited, whoever holds its pipes."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # no pidfd here: look now and then
        while _exists(pid) and not _is_zombie(pid):
            await asyncio.sleep(poll_s)
        return
    exited = loop.create_future()
    loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
    try:
        await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _stat(pid: int | str) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _is_zombie(pid: int) -> bool:
    try:
        return _stat(pid)[0] == "Z"
    except (OSError, IndexError):
        return False


def live_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that still run (zombies left out)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat(entry)
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def kill_group(pgid: int) -> int:
    """SIGKILL every process left in group `pgid`; the number that were still running."""
    running = len(live_members(pgid))
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return running
