"""The dashboard's request log: the newest requests of the deployment (time, key, model, route,
status, latency, first token, tokens), from `GET /requests`; a captured one opens with its bodies."""

from __future__ import annotations

import html
import time
from typing import Any

import ipywidgets as W

ROWS = 20
COLUMNS = (("Time", "at"), ("Key", "key"), ("Model", "model"), ("Route", "route"), ("Status", "status"),
           ("Latency ms", "latency_ms"), ("First token ms", "first_token_ms"), ("Prompt", "prompt_tokens"),
           ("Completion", "completion_tokens"), ("Bodies", "has_bodies"))


def cell(entry: dict[str, Any], name: str) -> str:
    """One cell's text."""
    value = entry.get(name)
    if name == "at":
        return time.strftime("%H:%M:%S", time.localtime(value)) if isinstance(value, (int, float)) else "—"
    if name == "key":
        if entry.get("hub_user"):
            return f"{entry['hub_user']} (Hub)"
        return entry.get("key_name") or entry.get("key_id") or "—"
    if name in ("latency_ms", "first_token_ms"):
        return f"{value:.1f}" if isinstance(value, (int, float)) else "—"
    if name == "has_bodies":
        return f"#{entry.get('id')}" if value else ""
    return "—" if value is None else str(value)


class RequestLogPanel:
    """The newest requests of one deployment, as a table."""

    def __init__(self) -> None:
        self.widget = W.HTML("<i>no requests yet</i>")
        self.widget.add_class("modeldeploy-request-log")
        self.entries: list[dict[str, Any]] = []

    def show(self, entries: list[dict[str, Any]]) -> None:
        """Render the entries of `GET /requests` (newest first)."""
        self.entries = entries[:ROWS]
        if not self.entries:
            self.widget.value = "<i>no requests yet</i>"
            return
        style = "style='padding:2px 10px 2px 0;text-align:left'"
        head = "".join(f"<th {style}>{html.escape(title)}</th>" for title, _ in COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td {style}>{html.escape(cell(e, name))}</td>" for _, name in COLUMNS) + "</tr>"
            for e in self.entries
        )
        note = ("<div style='opacity:.7'>Captured requests (#id) replay with <code>%deploy replay &lt;id&gt;</code>."
                "</div>") if any(e.get("has_bodies") for e in self.entries) else ""
        self.widget.value = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"
