"""A Ray deployment that scales to zero keeps one replica inside a warm window (`warm_hours`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from jupyter_modeldeploy.supervisor.state import Status
from tests.unit.test_ray_replica_events import make_run

ALWAYS = {"days": "daily", "start": "00:00", "end": "00:00"}
SCALES_TO_ZERO = {"replicas": {"min": 0, "max": 2}, "autoscaling": {"downscale_delay_s": 0}}


def replicas_wanted_when_idle(tmp_path: Path, **options: object) -> list[str]:
    """The idle deployment's replicas after one autoscaling step."""
    run, _, _ = make_run(tmp_path, SCALES_TO_ZERO, **options)
    dep = run.dep
    dep.status, dep.last_activity_at = Status.ACTIVE, time.time() - 3600
    removed: list[str] = []

    async def step() -> None:
        run.sup.spawn = lambda coro: (removed.append("one"), coro.close())  # type: ignore[attr-defined]
        run.sup.fire = lambda *args: True  # type: ignore[attr-defined]
        run._autoscale()

    asyncio.run(step())
    return removed


@pytest.mark.parametrize(("windows", "removed"), [([], ["one"]), ([ALWAYS], [])])
def test_scale_to_zero_waits_for_the_window_to_end(tmp_path: Path, windows: list[dict[str, str]],
                                                    removed: list[str]) -> None:
    assert replicas_wanted_when_idle(tmp_path, warm_hours=windows) == removed
