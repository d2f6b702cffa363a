"""The endpoints table (every deployment, with row actions) and the app that pairs it with a dashboard.

`DashboardApp` is what `notebooks/dashboard.ipynb` shows (also under Voilà): the table,
the selected deployment's dashboard and a launch form.
"""

from __future__ import annotations

import html
import os
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import ipywidgets as W

from ..client import ModelDeployClient, ModelDeployError
from .common import STATUS_COLORS, Panel, download_link, error_html, format_duration, model_names, status_badge, status_timeline
from .poller import Poller

COLUMNS = ("Name", "Kind", "Model", "Status", "Idle", "Requests", "Endpoint", "Status over time", "")
GRID_COLUMNS = "auto auto minmax(120px, 1fr) auto auto auto minmax(200px, 2fr) auto auto"


def _short(text: Any, limit: int = 40) -> str:
    text = str(text or "")
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


class _Row:
    """The widgets of one deployment's row, updated in place."""

    def __init__(self, table: EndpointsTable, record: dict[str, Any]):
        self.id = record["id"]
        self.open = W.Button(description=record["name"], tooltip="Open its dashboard",
                             layout=W.Layout(width="auto", min_width="90px"))
        self.open.add_class("modeldeploy-open")
        self.open.on_click(lambda _: table.select(self.id))
        self.kind = W.HTML()
        self.model = W.HTML()
        self.status = W.HTML()
        self.idle = W.HTML()
        self.requests = W.HTML()
        self.endpoint = W.HTML()
        self.timeline = W.HTML()
        small = W.Layout(width="80px")
        self.stop = W.Button(description="Stop", icon="stop", layout=small)
        self.stop.on_click(lambda _: table.stop(self.id))
        self.clone = W.Button(description="Clone", icon="copy", layout=W.Layout(width="85px"))
        self.clone.on_click(lambda _: table.ask_clone(self.id))
        self.export = W.Button(description="Export", icon="download", layout=W.Layout(width="90px"))
        self.export.on_click(lambda _: table.export(self.id))
        self.actions = W.HBox([self.stop, self.clone, self.export])
        self.cells = [self.open, self.kind, self.model, self.status, self.idle, self.requests, self.endpoint,
                      self.timeline, self.actions]
        self.update(record, None)

    def update(self, record: dict[str, Any], requests: int | None) -> None:
        def put(widget: W.HTML, value: str) -> None:
            if widget.value != value:
                widget.value = value

        self.open.description = record["name"]
        put(self.kind, html.escape(record.get("kind", "")))
        model = record.get("model") or ", ".join(model_names(record))
        put(self.model, f"<div title='{html.escape(str(model))}' style='line-height:1.3;word-break:break-all'>"
                        f"{html.escape(_short(model))}</div>")
        status = record.get("status")
        put(self.status, status_badge(status) + (
            f"<br><small title='{html.escape(str(record.get('status_reason')))}' style='color:{STATUS_COLORS['failed']}'>"
            f"{html.escape(_short(record.get('status_summary') or record.get('status_reason'), 60))}</small>"
            if status == "failed" and record.get("status_reason") else ""))
        put(self.idle, html.escape(format_duration(record.get("idle_for_s")) if record.get("serving") else "—"))
        put(self.requests, "—" if requests is None else str(requests))
        put(self.endpoint, "<div style='line-height:1.3'><code style='font-size:85%;word-break:break-all'>"
                           f"{html.escape(str(record.get('api_base', '')))}</code></div>")
        put(self.timeline, status_timeline(record.get("status_history") or []))
        self.stop.disabled = "stop" not in record.get("actions", [])


class EndpointsTable(Panel):
    """Every deployment with kind, model, status, idle time, requests and endpoint; row actions."""

    def __init__(self, client: ModelDeployClient | None = None, *, on_select: Callable[[str], None] | None = None,
                 interval_s: float = 5.0, autostart: bool = True):
        self.widget = self._make_box("modeldeploy-endpoints")
        self.client = client or ModelDeployClient()
        self.on_select = on_select
        self.rows: dict[str, _Row] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.selected: str | None = None
        self._lock = threading.Lock()
        self.header = [W.HTML(f"<b>{c}</b>") for c in COLUMNS]
        self.grid = W.GridBox(self.header, layout=W.Layout(
            grid_template_columns=GRID_COLUMNS, grid_gap="4px 10px", align_items="center",
            overflow="auto", width="100%"))
        self.grid.add_class("modeldeploy-endpoints-grid")
        self.message = W.HTML("")
        self.clone_name = W.Text(description="New name", layout=W.Layout(width="280px"))
        self.clone_launch = W.Checkbox(value=True, description="launch", indent=False, layout=W.Layout(width="90px"))
        self.clone_go = W.Button(description="Clone", icon="copy", button_style="primary")
        self.clone_go.on_click(lambda _: self.clone())
        self.clone_cancel = W.Button(description="Cancel")
        self.clone_cancel.on_click(lambda _: self._hide_clone())
        self.clone_box = W.HBox([W.HTML(""), self.clone_name, self.clone_launch, self.clone_go, self.clone_cancel],
                                layout=W.Layout(display="none", align_items="center"))
        self._clone_ref: str | None = None
        self.refresh_button = W.Button(icon="refresh", tooltip="Refresh", layout=W.Layout(width="40px"))
        self.refresh_button.on_click(lambda _: self.refresh())
        self.widget.children = [self.grid, self.clone_box, W.HBox([self.refresh_button, self.message],
                                                           layout=W.Layout(align_items="center"))]
        self.poller = Poller(self.refresh, interval_s, name="modeldeploy-endpoints",
                             on_error=lambda exc: self._say(str(exc), error=True))
        if autostart:
            self.poller.start()
        else:
            self.refresh()

    def _say(self, text_html: str, *, error: bool = False) -> None:
        color = "var(--jp-error-color1,#c62828)" if error else "inherit"
        self.message.value = f"<span style='color:{color}'>{text_html}</span>" if text_html else ""

    def _requests(self, record: dict[str, Any]) -> int | None:
        for key in ("requests_total", "requests"):
            if isinstance(record.get(key), int):
                return record[key]
        if not record.get("live") and record["id"] in self.rows:
            return None
        try:
            totals = self.client.metrics(record["id"], since=time.time()).get("totals") or {}
        except ModelDeployError:
            return None
        value = totals.get("requests")
        return value if isinstance(value, int) else None

    def refresh(self) -> None:
        """Reload every deployment; rows are updated in place, added or removed as needed."""
        with self._lock:
            try:
                records = self.client.list()
            except ModelDeployError as exc:
                self._say(html.escape(str(exc)), error=True)
                return
            self.records = {r["id"]: r for r in records}
            changed = set(self.records) != set(self.rows)
            for record in records:
                row = self.rows.get(record["id"])
                if row is None:
                    row = self.rows[record["id"]] = _Row(self, record)
                row.update(record, self._requests(record))
            for gone in set(self.rows) - set(self.records):
                for cell in self.rows.pop(gone).cells:
                    cell.close()
            if changed:
                cells: list[W.Widget] = list(self.header)
                for record in records:
                    cells += self.rows[record["id"]].cells
                self.grid.children = cells
            if not records and not self.message.value:
                self._say("<i>No deployments yet.</i>")

    def find(self, ref: str) -> str | None:
        """The id of a deployment given its id or name (the newest live one for a name)."""
        if ref in self.records:
            return ref
        named = [r for r in self.records.values() if r.get("name") == ref]
        named.sort(key=lambda r: (bool(r.get("live")), r.get("created_at") or 0))
        return named[-1]["id"] if named else None

    def select(self, ref: str) -> None:
        """Select a deployment (opens its dashboard through `on_select`)."""
        self.selected = self.find(ref) or ref
        for rid, row in self.rows.items():
            row.open.button_style = "info" if rid == self.selected else ""
        if self.on_select is not None:
            self.on_select(self.selected)

    def stop(self, ref: str) -> None:
        try:
            record = self.client.stop(ref)
            self._say(f"Stopped {html.escape(record['name'])}.")
        except ModelDeployError as exc:
            self._say(html.escape(str(exc)), error=True)
        self.poller.poke()

    def export(self, ref: str) -> None:
        try:
            data = self.client.export(ref)
        except ModelDeployError as exc:
            self._say(html.escape(str(exc)), error=True)
            return
        name = self.records.get(ref, {}).get("name", ref)
        self._say(download_link(data, f"{name}.json", f"Download the configuration of {name}"))

    def ask_clone(self, ref: str) -> None:
        self._clone_ref = ref
        name = self.records.get(ref, {}).get("name", ref)
        self.clone_box.children[0].value = f"Clone <b>{html.escape(name)}</b>"
        self.clone_name.value = f"{name}-copy"
        self.clone_box.layout.display = ""

    def _hide_clone(self) -> None:
        self.clone_box.layout.display = "none"
        self._clone_ref = None

    def clone(self) -> dict[str, Any] | None:
        if not self._clone_ref:
            return None
        try:
            record = self.client.clone(self._clone_ref, self.clone_name.value.strip(), start=self.clone_launch.value)
        except ModelDeployError as exc:
            self._say(html.escape(str(exc)), error=True)
            return None
        self._hide_clone()
        self._say(f"Cloned as {html.escape(record['name'])} ({html.escape(record['status'])}).")
        self.poller.poke()
        return record

    def shutdown(self) -> None:
        """Stop polling (called when the widget is closed)."""
        self.poller.stop()


def query_params(query: str | None = None) -> dict[str, str]:
    """The page's query string (Voilà passes it to the kernel as `QUERY_STRING`)."""
    query = os.environ.get("QUERY_STRING", "") if query is None else query
    return {k: v[-1] for k, v in parse_qs(query.lstrip("?")).items() if v}


def client_from_environment(query: str | None = None) -> ModelDeployClient:
    """A client for the server named by the query string (`server`, `token`), else by the environment.

    Inside a kernel started by a Jupyter server, `find_server` picks the server by `JPY_PARENT_PID`.
    """
    params = query_params(query)
    url = params.get("server") or params.get("server_url") or None
    token = params.get("token") if url else None
    return ModelDeployClient(url, token)


class DashboardApp(Panel):
    """Endpoints table + the selected deployment's dashboard + a launch form."""

    def __init__(self, client: ModelDeployClient | None = None, *, deployment: str | None = None,
                 interval_s: float = 2.0):
        self.widget = self._make_box("modeldeploy-app")
        self.client = client or client_from_environment()
        self.interval_s = interval_s
        self.dashboard: Any = None
        self.table = EndpointsTable(self.client, on_select=self.open, autostart=False)
        self.dashboard_box = W.VBox([W.HTML("<i>Select a deployment to see its dashboard.</i>")],
                                    layout=W.Layout(width="100%"))
        self.launch_box = W.VBox([])
        self.tabs = W.Tab(children=[self.dashboard_box, self.launch_box], titles=("Dashboard", "Launch"))
        self.tabs.observe(lambda _: self._build_form(), names="selected_index")
        self.widget.children = [W.HTML("<h2 style='margin:4px 0'>Model deployments</h2>"), self.table.widget, self.tabs]
        self.table.poller.start()
        if deployment:
            self.open(deployment)

    def _build_form(self) -> None:
        if self.tabs.selected_index == 1 and not self.launch_box.children:
            from .launch_form import LaunchForm

            form = LaunchForm(client=self.client, on_launched=lambda r: self.open(r["id"]))
            self.launch_box.children = [form.widget]

    def open(self, ref: str) -> None:
        """Show one deployment's dashboard (the previous one stops polling)."""
        from .dashboard import Dashboard

        if self.dashboard is not None:
            self.dashboard.close()
            self.dashboard = None
        try:
            self.dashboard = Dashboard(ref, self.client, interval_s=self.interval_s)
        except ModelDeployError as exc:
            self.dashboard_box.children = [W.HTML(error_html(str(exc)))]
            return
        self.dashboard_box.children = [self.dashboard.widget]
        self.tabs.selected_index = 0
        rid = self.dashboard.record.get("id")
        if rid:
            self.table.selected = rid
            for row_id, row in self.table.rows.items():
                row.open.button_style = "info" if row_id == rid else ""

    def shutdown(self) -> None:
        """Stop every poller (called when the widget is closed)."""
        if self.dashboard is not None:
            self.dashboard.close()
        self.table.close()
