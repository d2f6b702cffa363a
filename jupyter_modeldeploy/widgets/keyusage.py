"""The dashboard's per-key usage: a table of each key's requests, errors and tokens, and a bar chart
of its tokens, over the last hour, from `GET /usage` (exact counts, per key per model per minute)."""

from __future__ import annotations

import html
from typing import Any

import bqplot as bq
import ipywidgets as W

WINDOW_S = 3600.0
COUNTS = ("requests", "errors", "prompt_tokens", "completion_tokens")


def per_key(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows summed per key, most tokens first."""
    keys: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = keys.setdefault(row["key_id"], {"key_id": row["key_id"], "key_name": row.get("key_name"),
                                              "hub_user": row.get("hub_user"), **dict.fromkeys(COUNTS, 0), "models": set()})
        for name in COUNTS:
            key[name] += int(row.get(name) or 0)
        key["models"].add(row.get("model") or "-")
    return sorted(keys.values(), key=lambda k: (-(k["prompt_tokens"] + k["completion_tokens"]), k["key_id"]))


def key_label(key: dict[str, Any]) -> str:
    """A key's name and id (`api-key`: the deployment's fixed key; `none`: calls without a key); a key got on the
    Hub's share page by its holder's Hub name."""
    if key.get("hub_user"):
        return f"{key['hub_user']} (Hub, {key['key_id']})"
    name = key.get("key_name")
    return f"{name} ({key['key_id']})" if name else key["key_id"]


class KeyUsagePanel:
    """The per-key table and chart of one deployment's dashboard."""

    def __init__(self) -> None:
        self.table = W.HTML("<i>no requests in the last hour</i>")
        self.table.add_class("modeldeploy-key-usage")
        self.x = bq.OrdinalScale()
        self.y = bq.LinearScale(min=0)
        self.bars = bq.Bars(x=[], y=[], scales={"x": self.x, "y": self.y}, type="stacked",
                            colors=["#1976d2", "#66bb6a"], labels=["prompt", "completion"], display_legend=True)
        self.figure = bq.Figure(
            marks=[self.bars], axes=[bq.Axis(scale=self.x, label="key"),
                                     bq.Axis(scale=self.y, orientation="vertical", label="tokens")],
            title="Tokens per key (last hour)", layout=W.Layout(width="100%", height="260px"),
            fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 10},
        )
        self.widget = W.VBox([self.table, self.figure])
        self.keys: list[dict[str, Any]] = []

    def show(self, rows: list[dict[str, Any]]) -> None:
        """Render the rows of `GET /usage` (any order)."""
        self.keys = per_key(rows)
        if not self.keys:
            self.table.value = "<i>no requests in the last hour</i>"
            self.bars.x, self.bars.y = [], []
            return
        cell = "style='padding:2px 12px 2px 0;text-align:{}'"
        head = "".join(f"<th {cell.format('left' if i == 0 else 'right')}>{h}</th>"
                       for i, h in enumerate(("Key", "Requests", "Errors", "Prompt tokens", "Completion tokens", "Models")))
        body = "".join(
            "<tr>" + f"<td {cell.format('left')}>{html.escape(key_label(k))}</td>"
            + "".join(f"<td {cell.format('right')}>{k[name]}</td>" for name in COUNTS)
            + f"<td {cell.format('right')}>{html.escape(', '.join(sorted(k['models'])))}</td></tr>"
            for k in self.keys
        )
        self.table.value = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        labels = [key_label(k) for k in self.keys]
        with self.bars.hold_sync():
            self.bars.x = labels
            self.bars.y = [[k["prompt_tokens"] for k in self.keys], [k["completion_tokens"] for k in self.keys]]
