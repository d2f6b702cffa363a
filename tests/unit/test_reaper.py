"""The process-group guardian: stops the whole group, reports exit codes, dies with its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from jupyter_modeldeploy.supervisor import reaper

REAPER = reaper.__file__


def spawn(*engine: str, grace: float = 2.0) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, REAPER, str(grace), "--", *engine], start_new_session=True)


def children_of(proc: subprocess.Popen[bytes], timeout: float = 10, count: int = 1) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = psutil.Process(proc.pid).children(recursive=True)
        if len(kids) >= count:
            return kids
        time.sleep(0.05)
    raise AssertionError("engine did not start")


def test_exit_code_passes_through() -> None:
    proc = spawn(sys.executable, "-c", "import sys; sys.exit(3)")
    assert proc.wait(30) == 3


def test_missing_program_is_127() -> None:
    proc = spawn("/nonexistent/engine")
    assert proc.wait(30) == 127


def test_sigterm_stops_the_engine_and_its_children() -> None:
    # The engine starts a grandchild that ignores nothing: both must go.
    script = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    proc = spawn(sys.executable, "-c", script)
    family = children_of(proc, count=2)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(30)
    assert code == 128 + signal.SIGTERM
    _gone, alive = psutil.wait_procs(family, timeout=10)
    assert not alive


def test_a_stubborn_engine_is_killed_after_the_grace() -> None:
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    proc = spawn(sys.executable, "-c", script, grace=0.5)
    family = children_of(proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGKILL
    assert not psutil.wait_procs(family, timeout=10)[1]


def test_engine_dies_with_a_sigkilled_parent() -> None:
    # parent -> reaper -> engine; SIGKILL the parent and the engine must go.
    parent_code = (
        "import subprocess, sys, time;"
        f"subprocess.Popen([sys.executable, {REAPER!r}, '1', '--', 'sleep', '300'], start_new_session=True);"
        "time.sleep(300)"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    deadline = time.monotonic() + 10
    sleepers: list[psutil.Process] = []
    while time.monotonic() < deadline and not sleepers:
        sleepers = [p for p in psutil.Process(parent.pid).children(recursive=True) if p.name() == "sleep"]
        time.sleep(0.05)
    assert sleepers
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    assert not psutil.wait_procs(sleepers, timeout=15)[1], "the engine outlived its server"


def test_engine_dies_with_a_sigkilled_reaper() -> None:
    # kill -9 of the guardian itself: it can stop nothing, so the engine's own parent-death
    # signal must take it (before: orphaned to init, still running).
    proc = spawn("sleep", "300")
    [engine] = children_of(proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert not psutil.wait_procs([engine], timeout=2)[1], "the engine outlived its guardian"
