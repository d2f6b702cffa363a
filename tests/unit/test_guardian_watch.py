"""The supervisor sees a guardian's exit even when an orphan holds its console pipe, and kills the group."""

from __future__ import annotations

import asyncio

import psutil

from jupyter_modeldeploy.supervisor.guardian import kill_group, process_exited


async def test_an_exit_is_seen_while_an_orphan_holds_the_pipe_and_the_group_is_killed() -> None:
    # The "guardian" leaves a child holding the stdout pipe and exits when told to: what a
    # SIGKILLed reaper leaves behind.
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", "sleep 300 & echo $!; read line", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    orphan = psutil.Process(int(await proc.stdout.readline()))
    waiting = asyncio.ensure_future(proc.wait())  # the supervisor waits like this while the engine serves
    proc.stdin.write(b"exit\n")
    await asyncio.wait_for(process_exited(proc.pid), 5)
    await asyncio.sleep(0.3)
    assert not waiting.done(), "wait() returned although the orphan holds the pipe"
    assert kill_group(proc.pid) == 1
    assert await asyncio.wait_for(waiting, 5) == 0
    assert not psutil.wait_procs([orphan], timeout=2)[1]
    assert kill_group(proc.pid) == 0  # nothing left


async def test_an_already_gone_process_counts_as_exited() -> None:
    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()
    await asyncio.wait_for(process_exited(proc.pid), 2)
