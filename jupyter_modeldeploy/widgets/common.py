"""Small pieces the widgets share: status badges, durations, download links, copy buttons."""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from .. import formats
from ..formats import format_duration  # noqa: F401 - re-exported for the views

#: Each status's colour as a JupyterLab theme variable: the Lab panel's stylesheet uses the
#: same variables (a test checks it), so panel, widgets and Voilà agree in light and dark themes.
STATUS_VARS = {
    "loading": ("--jp-brand-color1", "#1976d2"),
    "active": ("--jp-success-color1", "#388e3c"),
    "idle": ("--jp-warn-color1", "#f57c00"),
    "unhealthy": ("--jp-error-color2", "#e57373"),
    "sleeping": ("--jp-info-color1", "#0097a7"),
    "waking": ("--jp-info-color2", "#4dd0e1"),
    "stopping": ("--jp-ui-font-color2", "#757575"),
    "stopped": ("--jp-ui-font-color3", "#bdbdbd"),
    "failed": ("--jp-error-color1", "#d32f2f"),
}
STATUS_COLORS = {status: f"var({name}, {fallback})" for status, (name, fallback) in STATUS_VARS.items()}
UNKNOWN_COLOR = "var(--jp-ui-font-color2, #9e9e9e)"


def progress_html(progress: dict[str, Any] | None) -> str:
    """A loading record's phase as an HTML progress bar (without a value while the percentage is unknown) and text."""
    if not progress:
        return ""
    percent = progress.get("percent")
    value = f" value='{float(percent):.0f}'" if percent is not None else ""
    return (f"<span class='modeldeploy-progress' data-phase='{html.escape(str(progress.get('phase')))}'>"
            f"<progress max='100'{value} style='width:160px;vertical-align:middle'></progress> "
            f"{html.escape(formats.describe_progress(progress, width=0))}</span>")


def load_times(record: dict[str, Any]) -> str:
    """The time each loading phase took in the last launch that reached serving (from the status history)."""
    for entry in reversed(record.get("status_history") or []):
        if entry.get("phases"):
            return ", ".join(f"{p['phase']} {p['elapsed_s']:.1f} s" for p in entry["phases"])
    return ""


def status_badge(status: str | None) -> str:
    """A coloured dot and the status word, as HTML."""
    status = status or "unknown"
    color = STATUS_COLORS.get(status, UNKNOWN_COLOR)
    return (
        f"<span class='modeldeploy-status modeldeploy-status-{html.escape(status)}' "
        f"style='white-space:nowrap'><span style='color:{color};font-size:120%'>&#9679;</span> "
        f"{html.escape(status)}</span>"
    )




def download_link(data: Any, filename: str, label: str | None = None, *, text: str | None = None,
                  mime: str = "application/json") -> str:
    """An HTML anchor that downloads `data` as a JSON file, or `text` as `mime` (a data: URL, no JavaScript)."""
    payload = base64.b64encode((json.dumps(data, indent=2) if text is None else text).encode()).decode()
    label = label or f"Download {filename}"
    return (
        f"<a class='modeldeploy-download' download='{html.escape(filename)}' "
        f"href='data:{mime};base64,{payload}' "
        "style='text-decoration:underline;color:var(--jp-content-link-color,#1976d2)'>"
        f"&#11015; {html.escape(label)}</a>"
    )


def copy_button(text: str, label: str = "Copy", *, css: str = "", title: str = "", style: str = "") -> str:
    """An HTML button that copies `text` to the clipboard (falls back to a prompt)."""
    value = json.dumps(text).replace("<", "\\u003c")
    script = (
        f"(function(b){{var t={value};"
        "function done(){b.textContent='Copied';setTimeout(function(){b.textContent=b.dataset.label;},1500);}"
        "if(navigator.clipboard&&window.isSecureContext){navigator.clipboard.writeText(t).then(done,"
        "function(){window.prompt('Copy:',t);});}else{window.prompt('Copy:',t);}})(this)"
    )
    # Every attribute double-quoted and escaped: the script's own quotes cannot end it early.
    return (
        f'<button class="jupyter-button widget-button modeldeploy-copy {html.escape(css)}" '
        f'data-label="{html.escape(label)}" data-copy="{html.escape(text)}" title="{html.escape(title)}" '
        f'style="{html.escape(style)}" '
        f'onclick="{html.escape(script)}">{html.escape(label)}</button>'
    )


def status_timeline(history: list[dict[str, Any]], *, now: float | None = None, width: int = 160,
                    height: int = 12) -> str:
    """An inline SVG bar: one coloured segment per status, from `status_history`."""
    if not history:
        return ""
    now = now or time.time()
    start = float(history[0].get("at") or now)
    span = max(now - start, 1e-6)
    rects = []
    for i, entry in enumerate(history):
        begin = float(entry.get("at") or start)
        end = float(history[i + 1].get("at") or now) if i + 1 < len(history) else now
        x = (begin - start) / span * width
        w = max((end - begin) / span * width, 1.0)
        status = str(entry.get("status"))
        tip = f"{status} at {time.strftime('%H:%M:%S', time.localtime(begin))}"
        if entry.get("reason"):
            tip += f": {entry['reason']}"
        rects.append(
            f"<rect x='{x:.1f}' y='0' width='{w:.1f}' height='{height}' "
            f"style='fill:{STATUS_COLORS.get(status, UNKNOWN_COLOR)}'><title>{html.escape(tip)}</title></rect>"
        )
    return (
        f"<svg class='modeldeploy-timeline' width='{width}' height='{height}' "
        f"style='vertical-align:middle;background:var(--jp-layout-color2,#eee)'>{''.join(rects)}</svg>"
    )


def is_embedding(record: dict[str, Any]) -> bool:
    """Whether a deployment's first model serves embeddings, as the server says (`models[].task`)."""
    models = record.get("models") or []
    return bool(models) and models[0].get("task") == "embed"


def model_names(record: dict[str, Any]) -> list[str]:
    """The names a deployment's models answer to."""
    names = [m.get("name") for m in record.get("models") or [] if m.get("name")]
    if names:
        return names
    config = record.get("config") or {}
    return [config.get("model_alias") or record.get("name") or "model"]


def reason_html(record: dict[str, Any]) -> str:
    """Why a deployment stopped or failed: the server's one-line summary, the raw engine lines behind a toggle."""
    reason = record.get("status_reason")
    if not reason:
        return ""
    summary = record.get("status_summary") or str(reason).splitlines()[0]
    details = record.get("status_details") or []
    color = "var(--jp-error-color1,#c62828)" if record.get("status") == "failed" else "var(--jp-ui-font-color2,#666)"
    raw = ""
    if details:
        raw = (
            "<details class='modeldeploy-reason-details'><summary style='cursor:pointer;"
            f"color:var(--jp-ui-font-color2,#666)'>Engine output ({len(details)} lines)</summary>"
            "<pre style='margin:2px 0;max-height:12em;overflow:auto;white-space:pre-wrap;font-size:11px'>"
            f"{html.escape(chr(10).join(details))}</pre></details>"
        )
    return (f"<div class='modeldeploy-reason'><div class='modeldeploy-reason-summary' style='color:{color}'>"
            f"{html.escape(str(summary))}</div>{raw}</div>")


def error_html(text: str) -> str:
    """A message in the error colour."""
    return f"<span style='color:var(--jp-error-color1,#c62828)'>{html.escape(text)}</span>"


class ClosingBox(W.VBox):
    """A VBox that runs a hook (stop polling) when it is closed, from Python or the page."""

    def __init__(self, hook: Callable[[], None] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self._modeldeploy_hook = hook

    def close(self) -> None:
        hook, self._modeldeploy_hook = self._modeldeploy_hook, None
        if hook is not None:
            hook()
        super().close()


class Panel:
    """A UI piece made of widgets: displays as its `widget`; `close()` stops its work and closes it."""

    widget: ClosingBox

    def _make_box(self, css_class: str, **layout: Any) -> ClosingBox:
        box = ClosingBox(self.shutdown, layout=W.Layout(width="100%", **layout))
        box.add_class(css_class)
        return box

    def shutdown(self) -> None:
        """Stop background work (polling); the widgets stay."""

    def close(self) -> None:
        """Stop background work and close the widgets."""
        self.shutdown()
        self.widget.close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
