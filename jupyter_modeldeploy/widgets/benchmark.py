"""The dashboard's benchmark section: run a concurrency sweep when asked, plot it, overlay saved ones, export them.

A sweep runs only from its button (in a thread, so the page stays live); results are saved
with the configuration they ran on (`benchmark.results`) and any of them can be drawn on the
same axes, from this deployment or another, to compare.
"""

from __future__ import annotations

import html
import threading
from pathlib import Path
from typing import Any

import ipywidgets as W

from ..benchmark import results
from ..benchmark.runner import DEFAULT_PROMPT, BenchmarkError, Settings, benchmark
from ..client import ModelDeployError
from ..formats import describe_step
from .common import download_link

METRICS: dict[str, str] = {
    "tokens_per_s": "tokens/s", "requests_per_s": "requests/s", "ttft_ms_p50": "TTFT p50 (ms)",
    "ttft_ms_p95": "TTFT p95 (ms)", "itl_ms_p50": "inter-token latency p50 (ms)",
}


def label(result: dict[str, Any]) -> str:
    """How a saved result is named in the picker and the legend."""
    settings = result.get("settings") or {}
    return f"{result.get('deployment')} · {settings.get('max_tokens')} tok · {result.get('id')}"


def series(result: dict[str, Any], metric: str) -> tuple[list[int], list[float]]:
    """(concurrency, value) of one result for one metric, the steps without a value left out."""
    points = [(s["concurrency"], s.get(metric)) for s in result.get("steps") or [] if s.get(metric) is not None]
    return [int(c) for c, _ in points], [float(v) for _, v in points]


class BenchmarkPanel:
    """Controls, a plot of the chosen metric against concurrency, the saved results to compare, exports."""

    def __init__(self, ref: str, client: Any, *, folder: Path | None = None):
        import bqplot as bq

        self.ref = ref
        self.client = client
        self.folder = folder
        self.thread: threading.Thread | None = None
        wide = {"description_width": "initial"}
        self.max_concurrency = W.BoundedIntText(value=8, min=1, max=256, description="Max clients", style=wide)
        self.max_tokens = W.BoundedIntText(value=64, min=1, max=4096, description="Output tokens", style=wide)
        self.requests_per_client = W.BoundedIntText(value=2, min=1, max=100, description="Per client", style=wide)
        self.prompt = W.Text(value=DEFAULT_PROMPT, description="Prompt", layout=W.Layout(width="60%"))
        self.run_button = W.Button(description="Run benchmark", icon="tachometer", button_style="warning")
        self.run_button.add_class("modeldeploy-bench-run")
        self.run_button.on_click(lambda _: self.start())
        self.metric = W.Dropdown(options=[(v, k) for k, v in METRICS.items()], value="tokens_per_s",
                                 description="Plot")
        self.metric.observe(lambda _: self.draw(), names="value")
        self.compare = W.SelectMultiple(options=[], description="Compare", layout=W.Layout(width="60%", height="90px"))
        self.compare.observe(lambda _: self.draw(), names="value")
        self.status = W.HTML("")
        self.status.add_class("modeldeploy-bench-status")
        self.exports = W.HTML("")
        self.x_scale = bq.LogScale()
        self.y_scale = bq.LinearScale(min=0.0)
        self.figure = bq.Figure(
            marks=[], axes=[bq.Axis(scale=self.x_scale, label="concurrent clients", tick_format="d"),
                            bq.Axis(scale=self.y_scale, orientation="vertical", grid_lines="dashed")],
            legend_location="top-left", animation_duration=0,
            fig_margin={"top": 10, "bottom": 40, "left": 60, "right": 20},
            layout=W.Layout(width="100%", height="280px"),
        )
        self._bq = bq
        self.saved: list[dict[str, Any]] = []
        self.widget = W.VBox([
            W.HBox([self.max_concurrency, self.max_tokens, self.requests_per_client],
                   layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.prompt, self.run_button], layout=W.Layout(align_items="center")),
            self.status, W.HBox([self.metric, self.compare], layout=W.Layout(flex_flow="row wrap")),
            self.figure, self.exports,
        ], layout=W.Layout(width="100%"))
        self.widget.add_class("modeldeploy-benchmark")
        self.reload()

    def reload(self, select: str | None = None) -> None:
        """Read the saved results; pick `select` (a result id), else this deployment's newest."""
        self.saved = results.load_all(self.folder)
        options = [(label(r), r["id"]) for r in reversed(self.saved)]
        mine = [r["id"] for r in reversed(self.saved) if self.ref in (r.get("deployment"), r.get("deployment_id"))]
        chosen = (select,) if select else tuple(mine[:1])
        self.compare.options = options
        known = {rid for _, rid in options}
        self.compare.value = tuple(rid for rid in chosen if rid in known)
        self.draw()

    def chosen(self) -> list[dict[str, Any]]:
        """The results picked for the plot."""
        picked = set(self.compare.value)
        return [r for r in self.saved if r["id"] in picked]

    def draw(self) -> None:
        """One line per chosen result, the chosen metric against concurrency; exports of those results."""
        bq = self._bq
        marks = []
        colors = ["#1976d2", "#e65100", "#2e7d32", "#6a1b9a", "#c62828", "#00838f"]
        for i, result in enumerate(self.chosen()):
            x, y = series(result, self.metric.value)
            if x:
                marks.append(bq.Lines(x=x, y=y, scales={"x": self.x_scale, "y": self.y_scale}, marker="circle",
                                      colors=[colors[i % len(colors)]], labels=[label(result)], display_legend=True))
        self.figure.marks = marks
        steps = sorted({int(x) for mark in marks for x in mark.x})
        self.figure.axes[0].tick_values = steps  # ticks at the concurrency steps, not log-scale fractions
        self.figure.axes[1].label = METRICS[self.metric.value]
        chosen = self.chosen()
        self.exports.value = (download_link(None, "benchmarks.csv", "Export CSV", text=results.to_csv(chosen),
                                            mime="text/csv") + " "
                              + download_link(None, "benchmarks.json", "Export JSON", text=results.to_json(chosen))
                              if chosen else "")

    def settings(self) -> Settings:
        return Settings(prompt=self.prompt.value, max_tokens=self.max_tokens.value,
                        max_concurrency=self.max_concurrency.value, requests_per_client=self.requests_per_client.value)

    def run(self) -> dict[str, Any] | None:
        """Run one sweep now (blocking), then show and select it; None when it cannot run."""
        self.run_button.disabled = True
        lines: list[str] = []

        def step(done: Any) -> None:
            lines.append(describe_step(done.to_json()))
            self.status.value = "<pre style='margin:0'>" + html.escape("\n".join(lines)) + "</pre>"

        try:
            self.status.value = "running…"
            result = benchmark(self.client, self.ref, self.settings(), on_step=step, save_to=self.folder)
        except (BenchmarkError, ModelDeployError) as exc:
            self.status.value = f"<span style='color:var(--jp-error-color1,#c62828)'>{html.escape(str(exc))}</span>"
            return None
        finally:
            self.run_button.disabled = False
        note = f" ({html.escape(result['note'])})" if result.get("note") else ""
        self.status.value += f"saved {html.escape(result['id'])}{note}"
        self.reload(select=result["id"])
        return result

    def start(self) -> None:
        """Run a sweep in a thread (the button's action), one at a time."""
        if self.thread is not None and self.thread.is_alive():
            return
        self.thread = threading.Thread(target=self.run, daemon=True, name="modeldeploy-benchmark")
        self.thread.start()
