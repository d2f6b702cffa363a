"""Live time-series charts (bqplot) fed by the metrics REST answers.

`SeriesWindow` keeps a bounded window of samples (memory does not grow however long a
dashboard stays open). `CHARTS` declares every chart once (title, unit, lines and where
their series come from); the dashboard and `chart()` both draw from it. `TimeChart` draws
one spec: its marks are made once, up front, and only their data changes afterwards; only
finite points reach the browser, and both scales always have an explicit, finite, rounded
domain, so bqplot never has to guess one from empty or NaN data.
"""

from __future__ import annotations

import html
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as W
import numpy as np

DEFAULT_WINDOW = 300
COLORS = ("#1976d2", "#e65100", "#2e7d32", "#6a1b9a", "#c62828", "#00838f")
KiB = 1024.0
GiB = 1024.0**3
#: The shortest time span a chart shows (seconds), so the first samples are not stretched edge to edge.
MIN_SPAN_S = 60.0


def format_number(value: float) -> str:
    """Three significant digits below 1000, whole numbers with separators above (no e-notation)."""
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


#: Round axis tops (times a power of ten) and the tick step each gets: 3 to 6 intervals.
NICE_TOPS = {1.0: 0.2, 1.2: 0.3, 1.5: 0.5, 2.0: 0.5, 2.5: 0.5, 3.0: 1.0, 4.0: 1.0, 5.0: 1.0, 6.0: 2.0, 8.0: 2.0}


def nice_ceiling(value: float) -> float:
    """The smallest round top (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten) at or above `value`;
    1 for nothing, zero or negative."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    base = 10.0 ** math.floor(math.log10(value))
    for top in (*NICE_TOPS, 10.0):
        if top * base >= value * (1 - 1e-9):
            return round(top * base, 12)
    return 10.0 * base


def tick_step(top: float) -> float:
    """The distance between y ticks for an axis from 0 to a `nice_ceiling` top (4 or 5 intervals)."""
    if not math.isfinite(top) or top <= 0:
        return 0.2
    base = 10.0 ** math.floor(math.log10(top))
    mantissa = round(top / base, 6)
    return NICE_TOPS.get(mantissa, mantissa / 4) * base


def tick_values(top: float) -> np.ndarray:
    """Round y tick values from 0 to `top`."""
    step = tick_step(top)
    count = round(top / step)
    return np.round(np.arange(count + 1) * step, 10)


def tick_format(top: float, ticks: int = 4) -> str:
    """A d3 number format for ticks from 0 to `top`: thousands separators, just enough decimals."""
    step = tick_step(top)
    decimals = 0 if step >= 1 else min(6, -math.floor(math.log10(step) + 1e-9))
    return f",.{decimals}~f" if decimals else ",.0f"


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
        """Whether the series has been seen at all."""
        return name in self.series

    def seconds(self) -> np.ndarray:
        """The time axis in Unix seconds."""
        return np.asarray(self.t, dtype=float)

    def times(self) -> np.ndarray:
        """The time axis as datetime64 (ms), for a bqplot DateScale."""
        return (self.seconds() * 1000).astype("datetime64[ms]")

    def __len__(self) -> int:
        return len(self.t)


# What to chart -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One line of a chart: its legend label, where its series lives (`deployment`, `host`, `gpu`)."""

    label: str
    source: str
    series: str
    unit: str | None = None  # None: the chart's unit


@dataclass(frozen=True)
class ChartSpec:
    """One chart, declared once: the dashboard and `chart()` draw it from this."""

    key: str
    title: str
    unit: str
    lines: tuple[Line, ...]
    scale: float = 1.0
    y_max: float | None = None
    markers: bool = False
    description: str = ""


def _dep(label: str, series: str) -> Line:
    return Line(label, "deployment", series)


def _host(label: str, series: str) -> Line:
    return Line(label, "host", series)


CHARTS: dict[str, ChartSpec] = {spec.key: spec for spec in (
    ChartSpec("requests", "Requests", "req/s", (_dep("requests/s", "requests_per_s"),
                                                Line("in flight", "deployment", "in_flight", unit="")),
              description="Requests finished per second, and requests in flight, through the gateway."),
    ChartSpec("latency", "Latency", "ms", (_dep("p50", "latency_p50_ms"), _dep("p99", "latency_p99_ms")), markers=True,
              description="Request duration percentiles over each sampling interval (only where requests ended)."),
    ChartSpec("tokens_per_s", "Completion tokens per second", "tok/s", (_dep("completion tok/s", "tokens_per_s"),),
              description="Completion tokens counted by the gateway over each interval, divided by its length."),
    ChartSpec("cpu", "CPU", "%", (_dep("engine", "process_cpu_percent"), _host("host", "cpu_percent")),
              description="CPU of the engine's processes, and of the whole host."),
    ChartSpec("memory", "Memory", "GiB", (_dep("engine", "process_rss_bytes"), _host("host used", "memory_used_bytes")),
              scale=GiB, description="Resident memory of the engine's processes, and memory in use on the host."),
    ChartSpec("network", "Network", "KiB/s", (_host("rx", "net_rx_bytes_per_s"), _host("tx", "net_tx_bytes_per_s")),
              scale=KiB, description="Host network receive and transmit rates."),
    ChartSpec("disk", "Disk", "KiB/s", (_host("read", "disk_read_bytes_per_s"), _host("write", "disk_write_bytes_per_s")),
              scale=KiB, description="Host disk read and write rates."),
    ChartSpec("gpu_util", "GPU utilization", "%", (Line("GPU", "gpu", "utilization_percent"),), y_max=100.0,
              description="Utilisation of each GPU."),
    ChartSpec("gpu_memory", "GPU memory", "GiB", (Line("GPU", "gpu", "memory_used_bytes"),), scale=GiB,
              description="Memory in use on each GPU."),
    ChartSpec("gpu_temp", "GPU temperature", "°C", (Line("GPU", "gpu", "temperature_celsius"),),
              description="Temperature of each GPU."),
)}
#: Other names `chart()` accepts for a chart.
ALIASES = {"tokens": "tokens_per_s", "tokens/s": "tokens_per_s", "gpu": "gpu_util", "gpu_utilization": "gpu_util",
           "gpu_temperature": "gpu_temp", "net": "network", "mem": "memory"}


def chart_spec(name: str) -> ChartSpec:
    """The spec of a chart by key (or alias); ValueError naming the choices otherwise."""
    key = ALIASES.get(name, name)
    if key not in CHARTS:
        raise ValueError(f"unknown chart {name!r}; choose one of: {', '.join(CHARTS)}")
    return CHARTS[key]


class MetricsFeed:
    """Bounded windows of a deployment's, the host's and each GPU's samples, fetched incrementally."""

    def __init__(self, client: Any, ref: str, window: int = DEFAULT_WINDOW):
        self.client = client
        self.ref = ref
        self.deployment = SeriesWindow(window)
        self.host = SeriesWindow(window)
        self.gpus: dict[int, SeriesWindow] = {}
        self.gpu_names: dict[int, str] = {}
        self.totals: dict[str, Any] = {}
        self.gpu_available: bool | None = None

    def fetch_deployment(self) -> None:
        """The deployment's samples newer than the last one held."""
        data = self.client.metrics(self.ref, since=self.deployment.last_t)
        self.deployment.extend(data.get("t") or [], data.get("series") or {})
        self.totals = data.get("totals") or self.totals

    def fetch_host(self) -> None:
        """The host's and GPUs' samples newer than the last one held."""
        data = self.client.host_metrics(since=self.host.last_t)
        t = data.get("t") or []
        self.host.extend(t, data.get("series") or {})
        for gpu in data.get("gpus") or []:
            index = int(gpu.get("index", 0))
            self.gpu_names[index] = str(gpu.get("name") or f"GPU {index}")
            self.gpus.setdefault(index, SeriesWindow(self.host.size)).extend(t, gpu.get("series") or {})
        if "gpu_available" in data:
            self.gpu_available = bool(data["gpu_available"])

    def lines(self, spec: ChartSpec) -> list[tuple[str, SeriesWindow, str]]:
        """`(label, window, series)` for each line of a chart (one per GPU for GPU lines)."""
        out: list[tuple[str, SeriesWindow, str]] = []
        for line in spec.lines:
            if line.source == "gpu":
                out += [(f"{i}: {self.gpu_names.get(i, '')}", w, line.series) for i, w in sorted(self.gpus.items())]
            else:
                out.append((line.label, self.deployment if line.source == "deployment" else self.host, line.series))
        return out

    def sources(self, spec: ChartSpec) -> set[str]:
        """Which fetches a chart needs."""
        return {"host" if line.source == "gpu" else line.source for line in spec.lines}


# Drawing -------------------------------------------------------------------------------------


class TimeChart:
    """One chart panel: a title with a legend, one line per series on a rounded, explicit domain."""

    def __init__(self, title: str, *, unit: str = "", scale: float = 1.0, height: str = "180px",
                 y_min: float = 0.0, y_max: float | None = None, markers: bool = False, key: str | None = None,
                 labels: Sequence[str] = ()):
        import bqplot as bq

        self._bq = bq
        self.title = title
        self.unit = unit
        self.scale = scale
        self.markers = markers
        self.y_min = y_min
        self.y_max = y_max
        now = time.time()
        self.x_scale = bq.DateScale(min=np.datetime64(int((now - MIN_SPAN_S) * 1000), "ms"),
                                    max=np.datetime64(int(now * 1000), "ms"))
        top = y_max if y_max is not None else y_min + 1.0
        # No padding: the domain is exactly 0 to a round top, so the ticks are round numbers.
        self.x_scale.allow_padding = False
        self.y_scale = bq.LinearScale(min=y_min, max=top, allow_padding=False)
        self.x_axis = bq.Axis(scale=self.x_scale, num_ticks=4, tick_format="%H:%M:%S", grid_lines="none")
        self.y_axis = bq.Axis(scale=self.y_scale, orientation="vertical", label=unit, grid_lines="dashed",
                              tick_format=tick_format(top - y_min), tick_values=tick_values(top - y_min) + y_min)
        self.marks: dict[str, Any] = {}
        self.figure = bq.Figure(
            marks=[], axes=[self.x_axis, self.y_axis], animation_duration=0,
            # Room on the right for the half of the last time label that sticks out.
            fig_margin={"top": 8, "bottom": 28, "left": 55, "right": 32},
            layout=W.Layout(width="100%", height=height, min_width="240px"),
        )
        self.line_units: dict[str, str] = {}
        self.set_labels(labels)
        self._latest: list[tuple[str, str, str]] = []
        self.header = W.HTML(self._header_html([]))
        self.note = W.HTML("", layout=W.Layout(display="none", height=height))
        self.widget = W.VBox([self.header, self.figure, self.note], layout=W.Layout(
            border="1px solid var(--jp-border-color2,#ddd)", padding="2px", min_width="260px"))
        self.widget.add_class("modeldeploy-chart")
        css = key or title.lower()
        self.widget.add_class("modeldeploy-chart-" + "".join(c if c.isalnum() else "-" for c in css))
        self.points = 0
        self.snippet = ""

    def set_snippet(self, code: str) -> None:
        """Offer `code` (what shows this chart alone) behind a copy button in the header."""
        self.snippet = code
        self.header.value = self._header_html(self._latest)

    @classmethod
    def from_spec(cls, spec: ChartSpec, *, height: str = "180px", labels: Sequence[str] | None = None) -> TimeChart:
        """A chart drawn as `spec` declares (its marks made now, one per line)."""
        if labels is None:
            labels = [line.label for line in spec.lines if line.source != "gpu"]
        chart = cls(spec.title, unit=spec.unit, scale=spec.scale, y_max=spec.y_max, markers=spec.markers,
                    key=spec.key, height=height, labels=labels)
        chart.line_units = {line.label: line.unit for line in spec.lines if line.unit is not None}
        return chart

    def set_labels(self, labels: Sequence[str]) -> None:
        """Make the marks for these lines (once: the figure's marks are set here, never per update)."""
        missing = [label for label in labels if label not in self.marks]
        if not missing:
            return
        for label in missing:
            self.marks[label] = self._bq.Lines(
                x=np.array([], dtype="datetime64[ms]"), y=np.array([], dtype=float),
                scales={"x": self.x_scale, "y": self.y_scale}, colors=[COLORS[len(self.marks) % len(COLORS)]],
                labels=[label], stroke_width=1.5,
                # Sparse series (latency: only where requests ended) show as points too.
                marker="circle" if self.markers else None, marker_size=12,
            )
        self.figure.marks = list(self.marks.values())

    def _header_html(self, latest: list[tuple[str, str, str]]) -> str:
        """Title, then a legend entry per line (colour, label, latest value with unit)."""
        self._latest = latest
        def unit(label: str) -> str:
            text = getattr(self, "line_units", {}).get(label, self.unit)
            return f" {text}" if text else ""

        entries = "".join(
            f"<span style='margin-left:10px;font-weight:normal;white-space:nowrap'>"
            f"<span style='color:{color}'>&#9632;</span> {html.escape(label)}: {html.escape(value + unit(label))}</span>"
            for color, label, value in latest
        )
        embed = ""
        if getattr(self, "snippet", ""):
            from .common import copy_button

            embed = copy_button(self.snippet, "</> code", css="modeldeploy-chart-snippet",
                                title=f"Copy the code that shows this chart alone:\n{self.snippet}",
                                style="height:18px;line-height:16px;padding:0 6px;font-size:11px;width:auto;min-width:0")
        return (f"<div style='font-size:90%;line-height:1.4'><b>{html.escape(self.title)}</b> {embed}"
                f"<span style='float:right'>{entries}</span></div>")

    def show_note(self, text: str) -> None:
        """Replace the plot by a note (e.g. 'no GPU')."""
        self.note.value = (
            "<div style='display:flex;align-items:center;justify-content:center;height:100%;"
            f"color:var(--jp-ui-font-color2,#888)'>{html.escape(text)}</div>"
        )
        if self.note.layout.display == "none":
            self.note.layout.display = ""
            # Out of the page, not hidden: a hidden bqplot figure lays itself out with negative sizes.
            self.widget.children = [self.header, self.note]
            self.widget.add_class("modeldeploy-chart-note")

    def hide_note(self) -> None:
        """Show the plot again."""
        if self.note.layout.display != "none":
            self.note.layout.display = "none"
            self.widget.children = [self.header, self.figure, self.note]
            self.widget.remove_class("modeldeploy-chart-note")

    def _set_domains(self, t_first: float, t_last: float, peak: float) -> None:
        """Explicit, finite domains: the time window (at least MIN_SPAN_S) and 0 to a rounded top."""
        start = min(t_first, t_last - MIN_SPAN_S)
        x_min = np.datetime64(int(start * 1000), "ms")
        x_max = np.datetime64(int(t_last * 1000), "ms")
        top = self.y_max if self.y_max is not None else nice_ceiling(max(peak, 0.0)) + self.y_min
        with self.x_scale.hold_sync():
            if self.x_scale.min != x_min.astype(object):
                self.x_scale.min = x_min
            if self.x_scale.max != x_max.astype(object):
                self.x_scale.max = x_max
        if self.y_scale.max != top:
            with self.y_scale.hold_sync(), self.y_axis.hold_sync():
                self.y_scale.max = top
                self.y_axis.tick_format = tick_format(top - self.y_min)
                self.y_axis.tick_values = tick_values(top - self.y_min) + self.y_min
        else:
            # Say the y domain again with every redraw, before its lines: a page seen (CI, twice)
            # keeping an old top while the lines rose above it heals at the next update.
            self.y_scale.send_state(["min", "max"])
            self.y_axis.send_state(["tick_format", "tick_values"])

    def update(self, lines: Sequence[tuple[str, SeriesWindow, str]]) -> None:
        """Redraw: one `(label, window, series key)` per line; only finite points are sent.

        The domains change first, then the lines: a point is never drawn outside the axes, not even
        for the moment between two messages.
        """
        self.set_labels([label for label, _, _ in lines])
        points: list[tuple[Any, np.ndarray, np.ndarray]] = []
        peak = -math.inf
        t_first, t_last = math.inf, -math.inf
        for label, window, key in lines:
            if len(window):
                seconds = window.seconds()
                t_first, t_last = min(t_first, float(seconds[0])), max(t_last, float(seconds[-1]))
            if not len(window) or not window.has(key):
                continue
            values = window.column(key) / self.scale
            finite = np.isfinite(values)
            y = values[finite]
            if y.size:
                peak = max(peak, float(y.max()))
            points.append((label, window.times()[finite], y))
        if math.isfinite(t_last):
            self._set_domains(t_first, t_last, peak)
        latest = []
        drawn = 0
        for label, x, y in points:
            mark = self.marks[label]
            with mark.hold_sync():
                mark.x = x
                mark.y = y
            drawn = max(drawn, int(y.size))
            latest.append((mark.colors[0], label, format_number(float(y[-1])) if y.size else "—"))
        if latest:
            self.hide_note()
            header = self._header_html(latest)
            if self.header.value != header:
                self.header.value = header
        self.points = drawn


def _no_gpu(feed: MetricsFeed, spec: ChartSpec) -> bool:
    return any(line.source == "gpu" for line in spec.lines) and not feed.gpus


def draw(chart: TimeChart, feed: MetricsFeed, spec: ChartSpec) -> None:
    """Draw a spec's lines from a feed (a GPU chart without GPUs says so)."""
    if _no_gpu(feed, spec):
        if feed.host.last_t is not None or feed.gpu_available is False:
            chart.show_note("no GPU")
        return
    chart.update(feed.lines(spec))


class LiveChart:
    """One chart of one deployment, live: `jupyter_modeldeploy.widgets.chart("name", "tokens_per_s")`."""

    def __init__(self, ref: str, metric: str = "requests", client: Any = None, *, interval_s: float = 2.0,
                 window: int = DEFAULT_WINDOW, height: str = "220px", autostart: bool = True):
        from ..client import ModelDeployClient
        from .common import ClosingBox
        from .poller import Poller

        self.spec = chart_spec(metric)
        self.client = client or ModelDeployClient()
        self.feed = MetricsFeed(self.client, ref, window)
        self.chart = TimeChart.from_spec(self.spec, height=height)
        self.error = W.HTML("")
        self.widget = ClosingBox(self.shutdown, children=[self.chart.widget, self.error],
                                 layout=W.Layout(width="100%"))
        self.widget.add_class("modeldeploy-live-chart")
        self._lock = threading.Lock()
        self.poller = Poller(self.refresh, interval_s, name=f"modeldeploy-chart-{ref}-{self.spec.key}")
        if autostart:
            self.poller.start()

    def refresh(self) -> None:
        """One poll: fetch what the chart needs and redraw it."""
        from ..client import ModelDeployError

        with self._lock:
            try:
                for source in sorted(self.feed.sources(self.spec)):
                    (self.feed.fetch_deployment if source == "deployment" else self.feed.fetch_host)()
                message = ""
            except ModelDeployError as exc:
                message = f"<span style='color:var(--jp-error-color1,#c62828)'>{html.escape(str(exc))}</span>"
            if self.error.value != message:
                self.error.value = message
            draw(self.chart, self.feed, self.spec)

    def shutdown(self) -> None:
        """Stop polling (called when the widget is closed)."""
        self.poller.stop()

    def close(self) -> None:
        """Stop polling and close the widget."""
        self.shutdown()
        self.widget.close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def chart(ref: str, metric: str = "requests", client: Any = None, **kwargs: Any) -> LiveChart:
    """One live chart of a deployment (by id or name): `requests`, `latency`, `tokens_per_s`, `cpu`,
    `memory`, `network`, `disk`, `gpu_util`, `gpu_memory` or `gpu_temp`."""
    return LiveChart(ref, metric, client, **kwargs)


def snippet(ref: str, metric: str) -> str:
    """The notebook code that shows one chart of a deployment."""
    return f"from jupyter_modeldeploy.widgets import chart\nchart({ref!r}, {chart_spec(metric).key!r})"
