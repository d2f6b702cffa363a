"""A check's steps: each timed and guarded, so one failure is reported and the run goes on."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

OK, FAILED, NOT_APPLICABLE = "ok", "failed", "not applicable"


class NotApplicable(Exception):
    """Raised by a step that cannot run on this host (no NVML on a CPU host, say); the message says why."""


@dataclass
class Step:
    """What one step found: its status, its figures, the checks it made, and the error if it failed."""

    number: str
    title: str
    status: str = OK
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def check(self, what: str, passed: bool, detail: str = "") -> bool:
        """Record one check (a figure against its goal); a failed check fails the step, the run goes on."""
        self.checks.append({"check": what, "passed": bool(passed), "detail": detail})
        if not passed and self.status == OK:
            self.status = FAILED
            self.error = f"check failed: {what} ({detail})" if detail else f"check failed: {what}"
        return bool(passed)

    def to_json(self) -> dict[str, Any]:
        """The step as the report's JSON holds it."""
        return {"number": self.number, "title": self.title, "status": self.status, "seconds": round(self.seconds, 2),
                "figures": self.figures, "checks": self.checks, "error": self.error}


def run_step(number: str, title: str, body: Callable[[Step], None], log: Callable[[str], None] = print) -> Step:
    """Run `body(step)`, timed; an exception marks the step failed (or not applicable) with its message."""
    step = Step(number, title)
    log(f"step {number}: {title} ...")
    started = time.monotonic()
    try:
        body(step)
    except NotApplicable as exc:
        step.status, step.error = NOT_APPLICABLE, str(exc)
    except Exception as exc:
        step.status = FAILED
        tail = traceback.format_exc().strip().splitlines()[-6:]
        step.error = f"{type(exc).__name__}: {exc}\n" + "\n".join(tail)
    step.seconds = time.monotonic() - started
    log(f"step {number}: {step.status} in {step.seconds:.1f} s" + (f" ({step.error.splitlines()[0]})" if step.error else ""))
    return step


def within(measured: float, estimate: float, tolerance: float) -> bool:
    """Whether `estimate` is within `tolerance` (0.15: ±15 %) of `measured`."""
    return measured > 0 and abs(estimate - measured) <= tolerance * measured
