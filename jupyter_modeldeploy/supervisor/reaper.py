"""Guardian of one engine's process group; run by file path, imports nothing of the project.

    python reaper.py <grace-seconds> -- <engine argv...>

The supervisor starts this script in a new process group with a parent-death signal. It
starts the engine in the same group and, when told to stop (SIGTERM/SIGINT) or when the
Jupyter server dies (the parent-death signal, or a changed parent), it stops the whole
group: SIGTERM, a grace period, then SIGKILL. So engines and their own children (vLLM
workers, llama.cpp router children) never outlive the server. It exits with the engine's
exit code (128 + signal when the engine was killed by a signal).

Should this guardian itself be killed outright (SIGKILL), the engine has its own
parent-death signal (SIGKILL: no guardian is left to escalate), and the supervisor, which
watches the guardian's exit, kills what is left of the group.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
try:  # resolved before any fork: the engine's pre-exec hook should only make the call
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux only)."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def engine_preexec(guardian: int) -> None:
    """Run in the engine's child before exec: die with the guardian, even by SIGKILL."""
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != guardian:
        os._exit(137)  # the guardian died before the signal was armed


def main(argv: list[str]) -> int:
    grace = float(argv[0])
    engine_argv = argv[2:] if len(argv) > 1 and argv[1] == "--" else argv[1:]
    parent = os.getppid()
    set_parent_death_signal()
    if os.getppid() != parent or parent == 1:
        return 137  # the parent died before the signal was armed
    stopping = False

    def on_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    try:
        me = os.getpid()
        engine = subprocess.Popen(engine_argv, preexec_fn=lambda: engine_preexec(me))
    except OSError as exc:
        print(f"cannot start the engine {engine_argv[0]!r}: {exc.strerror}", file=sys.stderr, flush=True)
        return 127
    while engine.poll() is None and not stopping:
        if os.getppid() != parent:
            stopping = True
            break
        try:
            engine.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
    if stopping:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while engine.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    # Whatever is left of the group (the engine's own children too) goes now.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    code = engine.wait() if engine.poll() is not None else None
    _signal_group(signal.SIGKILL, spare_self=True)
    if code is None:
        code = engine.wait()
    return 128 - code if code < 0 else code


def _signal_group(sig: int, spare_self: bool = False) -> None:
    if spare_self:
        # SIGKILL would take this process too before it can report the exit code; kill the
        # others one by one (members of our process group).
        me = os.getpid()
        pgid = os.getpgid(0)
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    os.kill(int(entry), sig)
            except (OSError, IndexError, ValueError):
                continue
        return
    try:
        os.killpg(0, sig)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
