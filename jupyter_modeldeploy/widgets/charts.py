"""Live time-series panels (bqplot) fed by the metrics REST answers.

`SeriesWindow` keeps a bounded window of samples (so memory does not grow however long a
dashboard stays open); `TimeChart` draws some series of it as lines and redraws by
replacing the marks' data inside one synchronised update (no flicker, no new marks).
"""

from __future__ import annotations

import html
import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import ipywidgets as W
import numpy as np

DEFAULT_WINDOW = 300
COLORS = ("#1976d2", "#e65100", "#2e7d32", "#6a1b9a", "#c62828", "#00838f")


def format_number(value: float) -> str:
    """Three significant digits below 1000, whole numbers with separators above (no e-notation)."""
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _number(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class SeriesWindow:
    """The last `size` samples of named series sharing one time axis."""

    def __init__(self, size: int = DEFAULT_WINDOW):
        self.size = size
        self.t: deque[float] = deque(maxlen=size)
        self.series: dict[str, deque[float]] = {}
        self.last_t: float | None = None

    def extend(self, t: Sequence[float], series: dict[str, Sequence[Any]]) -> int:
        """Append samples newer than the last one; returns how many were added."""
        added = 0
        for i, ts in enumerate(t or []):
            ts = _number(ts)
            if math.isnan(ts) or (self.last_t is not None and ts <= self.last_t):
                continue
            self.t.append(ts)
            for name, values in (series or {}).items():
                column = self.series.get(name)
                if column is None:
                    # A series that shows up late is NaN before its first sample.
                    column = self.series[name] = deque([math.nan] * (len(self.t) - 1), maxlen=self.size)
                column.append(_number(values[i]) if i < len(values or []) else math.nan)
            for name, column in self.series.items():
                if name not in (series or {}):
                    column.append(math.nan)
            self.last_t = ts
            added += 1
        return added

    def column(self, name: str) -> np.ndarray:
        """One series as floats aligned with `t` (NaN where missing)."""
        values = self.series.get(name)
        if values is None:
            return np.full(len(self.t), np.nan)
        return np.asarray(values, dtype=float)

    def has(self, name: str) -> bool:
        return name in self.series

    def times(self) -> np.ndarray:
        """The time axis as datetime64 (ms), for a bqplot DateScale."""
        return (np.asarray(self.t, dtype=float) * 1000).astype("datetime64[ms]")

    def __len__(self) -> int:
        return len(self.t)


class TimeChart:
    """One chart panel: a title and one line per series (each with its own time axis), or a note."""

    def __init__(self, title: str, *, unit: str = "", scale: float = 1.0, height: str = "180px",
                 y_min: float | None = 0.0, y_max: float | None = None, markers: bool = False):
        import bqplot as bq

        self._bq = bq
        self.title = title
        self.unit = unit
        self.scale = scale
        self.markers = markers
        self.y_min = y_min
        self.y_max = y_max
        self.x_scale = bq.DateScale()
        self.y_scale = bq.LinearScale(min=y_min, max=y_max)
        self.marks: dict[str, Any] = {}
        x_axis = bq.Axis(scale=self.x_scale, num_ticks=4, tick_format="%H:%M:%S", grid_lines="none")
        y_axis = bq.Axis(scale=self.y_scale, orientation="vertical", num_ticks=4, label=unit, grid_lines="dashed")
        self.figure = bq.Figure(
            marks=[], axes=[x_axis, y_axis], animation_duration=0,
            fig_margin={"top": 8, "bottom": 28, "left": 55, "right": 8},
            layout=W.Layout(width="100%", height=height, min_width="240px"),
        )
        self.header = W.HTML(self._header_html([]))
        self.note = W.HTML("", layout=W.Layout(display="none", height=height))
        self.widget = W.VBox([self.header, self.figure, self.note], layout=W.Layout(
            border="1px solid var(--jp-border-color2,#ddd)", padding="2px", min_width="260px"))
        self.widget.add_class("modeldeploy-chart")
        self.widget.add_class("modeldeploy-chart-" + "".join(c if c.isalnum() else "-" for c in title.lower()))
        self.points = 0

    def _header_html(self, latest: list[tuple[str, str, str]]) -> str:
        """Title, then a legend entry per line (colour, label, latest value with unit)."""
        unit = f" {self.unit}" if self.unit else ""
        entries = "".join(
            f"<span style='margin-left:10px;font-weight:normal;white-space:nowrap'>"
            f"<span style='color:{color}'>&#9632;</span> {html.escape(label)}: {html.escape(value + unit)}</span>"
            for color, label, value in latest
        )
        return (f"<div style='font-size:90%;line-height:1.4'><b>{html.escape(self.title)}</b>"
                f"<span style='float:right'>{entries}</span></div>")

    def show_note(self, text: str) -> None:
        """Replace the plot by a note (e.g. 'no GPU')."""
        self.note.value = (
            "<div style='display:flex;align-items:center;justify-content:center;height:100%;"
            f"color:var(--jp-ui-font-color2,#888)'>{html.escape(text)}</div>"
        )
        if self.note.layout.display == "none":
            self.note.layout.display = ""
            self.figure.layout.display = "none"
            self.widget.add_class("modeldeploy-chart-note")

    def hide_note(self) -> None:
        if self.note.layout.display != "none":
            self.note.layout.display = "none"
            self.figure.layout.display = ""
            self.widget.remove_class("modeldeploy-chart-note")

    def _mark(self, label: str) -> Any:
        mark = self.marks.get(label)
        if mark is None:
            mark = self._bq.Lines(
                x=np.array([], dtype="datetime64[ms]"), y=np.array([], dtype=float),
                scales={"x": self.x_scale, "y": self.y_scale}, colors=[COLORS[len(self.marks) % len(COLORS)]],
                labels=[label], stroke_width=1.5,
                # Sparse series (latency: only where requests ran) show as points too.
                marker="circle" if self.markers else None, marker_size=12,
            )
            self.marks[label] = mark
            self.figure.marks = list(self.marks.values())
        return mark

    def _fit_y(self, peak: float) -> None:
        """Keep a usable y range when every value is the floor (all zeros would collapse the axis)."""
        if self.y_max is not None or self.y_min is None:
            return
        wanted = self.y_min + 1.0 if not math.isfinite(peak) or peak <= self.y_min else None
        if self.y_scale.max != wanted:
            self.y_scale.max = wanted

    def update(self, lines: Sequence[tuple[str, SeriesWindow, str]]) -> None:
        """Redraw: one `(label, window, series key)` per line; data replaced in place."""
        latest = []
        drawn = 0
        peak = -math.inf
        for label, window, key in lines:
            if not len(window) or not window.has(key):
                continue
            values = window.column(key) / self.scale
            finite = values[np.isfinite(values)]
            if finite.size:
                peak = max(peak, float(finite.max()))
            mark = self._mark(label)
            with mark.hold_sync():
                mark.x = window.times()
                mark.y = values
            drawn = max(drawn, len(window))
            # Sparse series (latency) show their last known value.
            latest.append((mark.colors[0], label, format_number(finite[-1]) if finite.size else "—"))
        if drawn:
            self._fit_y(peak)
            self.hide_note()
            header = self._header_html(latest)
            if self.header.value != header:
                self.header.value = header
        self.points = drawn
