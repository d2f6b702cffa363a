"""The restart policy's pure decisions: what a new server does with each stored state, back-off, crash loops."""

from __future__ import annotations

import pytest

from jupyter_modeldeploy.config import parse_config
from jupyter_modeldeploy.supervisor.restart import (
    SERVER_SHUTDOWN,
    CrashBook,
    RestartLimits,
    Resume,
    after_crash,
    applies_to,
    on_server_start,
    restarts_crashes,
)
from jupyter_modeldeploy.supervisor.state import Status

LIMITS = RestartLimits(base_delay_s=1.0, max_delay_s=5.0, max_restarts=4, window_s=100.0)


@pytest.mark.parametrize(("status", "reason", "expected"), [
    (Status.ACTIVE, None, Resume.RELAUNCH),
    (Status.IDLE, None, Resume.RELAUNCH),
    (Status.LOADING, None, Resume.RELAUNCH),
    (Status.UNHEALTHY, None, Resume.RELAUNCH),
    (Status.SLEEPING, None, Resume.PARK),
    (Status.STOPPING, "stopped by the user", Resume.STOP),
    (Status.STOPPED, SERVER_SHUTDOWN, Resume.RELAUNCH),
    (Status.STOPPED, "stopped by the user", Resume.STOP),
    (Status.FAILED, "the engine exited with code 1 while serving", Resume.STOP),
])
def test_always_brings_back_what_was_serving(status: Status, reason: str | None, expected: Resume) -> None:
    assert on_server_start("always", status, reason) is expected


@pytest.mark.parametrize("policy", ["never", "on-failure"])
def test_other_policies_list_everything_stopped(policy: str) -> None:
    for status in Status:
        assert on_server_start(policy, status, SERVER_SHUTDOWN) is Resume.STOP


def test_which_policies_restart_crashes() -> None:
    assert [p for p in ("never", "on-failure", "always") if restarts_crashes(p)] == ["on-failure", "always"]


def test_back_off_doubles_up_to_its_ceiling_then_a_crash_loop_gives_up() -> None:
    book = CrashBook(LIMITS)
    decisions = [book.crashed("d1", "on-failure", now) for now in (10.0, 11.0, 12.0, 13.0)]
    assert [d.delay_s for d in decisions] == [1.0, 2.0, 4.0, None]
    assert "restart 1 of at most 3 within 100 s" in decisions[0].note
    assert decisions[-1].note == "crash loop: 4 crashes within 100 s; not restarting again (restart: on-failure)"


def test_crashes_out_of_the_window_are_forgotten() -> None:
    book = CrashBook(LIMITS)
    for now in (0.0, 1.0, 2.0):
        book.crashed("d1", "always", now)
    assert book.crashed("d1", "always", 500.0).delay_s == 1.0  # the earlier three are outside the window
    assert after_crash("always", [0.0] * 10 + [500.0], 500.0, LIMITS).delay_s == 1.0
    assert after_crash("always", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 6.0, LIMITS).delay_s is None


def test_the_ceiling_holds() -> None:
    wide = RestartLimits(base_delay_s=1.0, max_delay_s=5.0, max_restarts=100, window_s=100.0)
    assert after_crash("always", [float(t) for t in range(10)], 9.0, wide).delay_s == 5.0


def test_forget_counts_afresh() -> None:
    book = CrashBook(LIMITS)
    for now in (0.0, 1.0, 2.0):
        book.crashed("d1", "always", now)
    book.forget("d1")
    assert book.crashed("d1", "always", 3.0).delay_s == 1.0


def test_the_option_defaults_to_always_and_applies_to_local_deployments() -> None:
    config = parse_config({"kind": "llamacpp", "name": "x", "model": "m.gguf"})
    assert config.restart == "always" and applies_to(config)
    with pytest.raises(ValueError, match="restart"):
        parse_config({"kind": "llamacpp", "name": "x", "model": "m.gguf", "restart": "sometimes"})


def test_after_a_crash_the_reason_says_what_follows_on_its_first_line() -> None:
    book = CrashBook(LIMITS)
    config = parse_config({"kind": "llamacpp", "name": "x", "model": "m.gguf", "restart": "on-failure"})
    delay, reason = book.after("d1", config, "exited with code 1\nlast lines", 10.0)
    assert delay == 1.0 and reason.startswith("exited with code 1; restarting in 1 s") and reason.endswith("\nlast lines")
    never = parse_config({"kind": "llamacpp", "name": "y", "model": "m.gguf", "restart": "never"})
    assert book.after("d2", never, "exited with code 1", 10.0) == (None, "exited with code 1")
