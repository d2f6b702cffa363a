"""Loading progress as text for `launch --wait` and `%deploy --wait`: a line redrawn in place, or a line per phase."""

from __future__ import annotations

from typing import Any

from . import formats


class ProgressPrinter:
    """Writes each polled record's loading progress to `stream` (`redraw`: in place with a carriage return)."""

    def __init__(self, stream: Any, *, redraw: bool | None = None):
        self.stream = stream
        self.redraw = bool(getattr(stream, "isatty", lambda: False)()) if redraw is None else redraw
        self.last_phase: str | None = None
        self.width = 0

    def __call__(self, record: dict[str, Any]) -> None:
        progress = record.get("progress")
        if not progress:
            return
        line = formats.describe_progress(progress)
        if self.redraw:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        elif progress["phase"] != self.last_phase:
            self.stream.write(line + "\n")
        self.last_phase = progress["phase"]
        self.stream.flush()

    def done(self, record: dict[str, Any]) -> None:
        """After the wait: the time each loading phase took, from the status history."""
        if self.redraw and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
        for entry in reversed(record.get("status_history") or []):
            if entry.get("phases"):
                times = ", ".join(f"{p['phase']} {p['elapsed_s']:.1f} s" for p in entry["phases"])
                self.stream.write(f"loaded in {sum(p['elapsed_s'] for p in entry['phases']):.1f} s: {times}\n")
                break
        self.stream.flush()
