"""The phases of a deployment's loading, with numbers: pure bookkeeping over times it is given.

`LoadProgress` keeps the current phase (see `engines.progress.PHASES`), its percentage and
download figures, and every phase passed with its elapsed time; the record shows it while
loading, and the status history keeps the phases once the deployment serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..engines.progress import DOWNLOADING, PHASES, READY, ProgressPattern


@dataclass
class LoadProgress:
    """Where a launch is: the phase, a percentage when known, download bytes and rate, the phases so far."""

    started_at: float
    phase: str = PHASES[0]
    phase_started_at: float = 0.0
    percent: float | None = None
    bytes_done: int | None = None
    bytes_total: int | None = None
    rate_bytes_per_s: float | None = None
    phases: list[dict[str, Any]] = field(default_factory=list)  # {phase, started_at, elapsed_s}, ended ones

    def __post_init__(self) -> None:
        self.phase_started_at = self.phase_started_at or self.started_at

    def enter(self, phase: str, now: float, percent: float | None = None) -> bool:
        """Move to `phase` (never back to an earlier one); True when something changed."""
        if phase not in PHASES or PHASES.index(phase) < PHASES.index(self.phase):
            return False
        if phase == self.phase:
            if percent is None or percent == self.percent:
                return False
            self.percent = percent
            return True
        ended: dict[str, Any] = {"phase": self.phase, "started_at": self.phase_started_at,
                                 "elapsed_s": round(max(0.0, now - self.phase_started_at), 3)}
        if self.phase == DOWNLOADING and self.bytes_done is not None:
            ended["bytes"] = self.bytes_done
        self.phases.append(ended)
        self.phase, self.phase_started_at, self.percent = phase, now, percent
        if phase != DOWNLOADING:
            self.bytes_done = self.bytes_total = None
            self.rate_bytes_per_s = None
        return True

    def downloaded(self, done: int, total: int | None, now: float) -> bool:
        """Download figures: bytes done of total, the rate since the phase began."""
        self.enter(DOWNLOADING, now)
        if self.phase != DOWNLOADING:
            return False
        self.bytes_done, self.bytes_total = int(done), int(total) if total else None
        elapsed = now - self.phase_started_at
        self.rate_bytes_per_s = done / elapsed if elapsed > 0 else None
        self.percent = min(100.0, 100.0 * done / total) if total else None
        return True

    def line(self, patterns: list[ProgressPattern], text: str, now: float) -> bool:
        """Match one console line against the engine's patterns; True when the phase or percentage moved."""
        for pattern in patterns:
            found = pattern.match(text)
            if found is not None:
                return self.enter(found[0], now, found[1])
        return False

    def finish(self, now: float) -> list[dict[str, Any]]:
        """Ready: close the last phase; returns every phase with its elapsed time."""
        self.enter(READY, now)
        return list(self.phases)

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "phase": self.phase, "percent": self.percent, "phase_elapsed_s": round(max(0.0, now - self.phase_started_at), 3),
            "elapsed_s": round(max(0.0, now - self.started_at), 3), "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total, "rate_bytes_per_s": self.rate_bytes_per_s, "phases": list(self.phases),
        }
