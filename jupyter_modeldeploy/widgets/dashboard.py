"""The dashboard of one deployment: status, endpoint, key, test command, models, live charts, log.

It polls the REST API in a background thread (record, deployment metrics, host metrics,
console tail) every few seconds, keeps bounded windows of samples, and stops polling when
the widget is closed.
"""

from __future__ import annotations

import html
import json
import threading
import time
from typing import Any

import httpx
import ipywidgets as W

from ..client import ModelDeployClient, ModelDeployError
from ..formats import queue_summary, replica_lines, replica_summary
from .benchmark import BenchmarkPanel
from .charts import CHARTS, DEFAULT_WINDOW, MetricsFeed, TimeChart, draw, snippet
from .common import (
    Panel,
    copy_button,
    download_link,
    error_html,
    format_duration,
    is_embedding,
    load_times,
    model_names,
    progress_html,
    reason_html,
    status_badge,
)
from .keyusage import WINDOW_S as KEY_WINDOW_S
from .keyusage import KeyUsagePanel
from .poller import Poller
from .requestlog import ROWS as LOG_ROWS
from .requestlog import RequestLogPanel


def summarize_answer(record: dict[str, Any], data: Any) -> str:
    """The readable part of an engine's answer (the reply text, or the embedding's size)."""
    if not isinstance(data, dict):
        return str(data)
    if is_embedding(record) or data.get("object") == "list":
        items = data.get("data") or []
        if items and isinstance(items[0], dict) and "embedding" in items[0]:
            vector = items[0]["embedding"]
            head = ", ".join(f"{v:.4f}" for v in vector[:5]) if isinstance(vector, list) else ""
            return f"embedding of {len(vector)} dimensions: [{head}, …]"
    choices = data.get("choices") or []
    if choices:
        first = choices[0]
        message = first.get("message") or {}
        return str(message.get("content") if message.get("content") is not None else first.get("text", ""))
    return json.dumps(data)[:2000]


class Dashboard(Panel):
    """Live dashboard of one deployment (by id or name)."""

    def __init__(self, ref: str, client: ModelDeployClient | None = None, *, interval_s: float = 2.0,
                 window: int = DEFAULT_WINDOW, api_key: str | None = None, autostart: bool = True,
                 log_lines: int = 200):
        self.widget = self._make_box("modeldeploy-dashboard")
        self.client = client or ModelDeployClient()
        self.ref = ref
        self.interval_s = interval_s
        self.log_lines = log_lines
        self.record: dict[str, Any] = {}
        self.api_key = api_key
        self._lock = threading.Lock()
        self.feed = MetricsFeed(self.client, ref, window)
        self.dep_window = self.feed.deployment
        self.host_window = self.feed.host
        self.host_seen = False
        self.totals: dict[str, Any] = {}
        self._log_signature: tuple[Any, ...] = ()
        self._models_signature: Any = None
        self.errors: dict[str, str] = {}
        self._build()
        self.poller = Poller(self.refresh, interval_s, name=f"modeldeploy-dashboard-{ref}")
        self._note_gpus()
        try:
            self.refresh_record()
        except ModelDeployError as exc:
            self.errors["record"] = str(exc)
            self._show_errors()
        if autostart:
            self.poller.start()

    # Layout ----------------------------------------------------------------------------

    def _build(self) -> None:
        self.title = W.HTML("")
        self.status = W.HTML("")
        self.status.add_class("modeldeploy-dashboard-status")
        self.reason = W.HTML("")
        self.info = W.HTML("")
        self.info.add_class("modeldeploy-dashboard-info")
        self.error_line = W.HTML("")

        # API key
        self.key_text = W.Text(value="", disabled=True, placeholder="no key yet: generate one",
                               layout=W.Layout(width="340px"))
        self.key_text.add_class("modeldeploy-key")
        self.reveal = W.ToggleButton(description="Reveal", icon="eye", layout=W.Layout(width="100px"))
        self.reveal.observe(lambda _: self._show_key(), names="value")
        self.generate = W.Button(description="Generate key", icon="key", layout=W.Layout(width="140px"))
        self.generate.on_click(lambda _: self._generate_key())
        self.copy = W.HTML("")
        self.key_note = W.HTML("")
        self.key_row = W.HBox([W.HTML("<b>API key</b>", layout=W.Layout(width="110px")), self.key_text,
                               self.reveal, self.generate, self.copy, self.key_note],
                              layout=W.Layout(align_items="center", flex_flow="row wrap"))

        # Test command
        self.model_pick = W.Dropdown(options=[], layout=W.Layout(width="240px"))
        # The command follows the prompt as it is typed (each change asks the server, a loopback call).
        self.prompt = W.Text(value="Say hello in five words.", placeholder="prompt", layout=W.Layout(width="360px"))
        self.prompt.add_class("modeldeploy-prompt")
        self.send = W.Button(description="Send", icon="paper-plane", button_style="primary",
                             layout=W.Layout(width="100px"))
        self.send.add_class("modeldeploy-send")
        self.send.on_click(lambda _: self._send_clicked())
        self.command = W.Textarea(value="", disabled=True, rows=3, layout=W.Layout(width="100%"))
        self.command.add_class("modeldeploy-test-command")
        self.copy_command = W.HTML("")
        self.command_note = W.HTML("")
        self.command_note.add_class("modeldeploy-command-note")
        self.command_key = W.Button(description="Generate a key for it", icon="key", layout=W.Layout(width="200px",
                                    display="none", flex="none"))
        self.command_key.add_class("modeldeploy-command-key")
        self.command_key.on_click(lambda _: self._generate_key())
        self.test: dict[str, Any] = {}
        self._test_signature: tuple[Any, ...] = ()
        self.answer = W.HTML("")
        self.answer.add_class("modeldeploy-answer")
        for widget in (self.model_pick, self.prompt):
            widget.observe(lambda _: self._update_command(), names="value")
        test_box = W.VBox([
            W.HBox([W.HTML("<b>Test</b>", layout=W.Layout(width="110px")), self.model_pick, self.prompt, self.send],
                   layout=W.Layout(align_items="center", flex_flow="row wrap")),
            W.HBox([self.command, self.copy_command], layout=W.Layout(align_items="flex-start")),
            W.HBox([self.command_note, self.command_key], layout=W.Layout(align_items="center")),
            self.answer,
        ])

        self.models_table = W.HTML("")
        self.models_table.add_class("modeldeploy-models")

        # Actions
        self.stop_button = W.Button(description="Stop", icon="stop", button_style="danger",
                                    layout=W.Layout(width="100px"))
        self.stop_button.on_click(lambda _: self._action("stop"))
        self.relaunch_button = W.Button(description="Relaunch", icon="play", layout=W.Layout(width="110px"))
        self.relaunch_button.on_click(lambda _: self._action("relaunch"))
        self.export_link = W.HTML("")
        self.export_button = W.Button(description="Export configuration", icon="download",
                                      layout=W.Layout(width="190px"))
        self.export_button.on_click(lambda _: self._export())
        actions = W.HBox([self.stop_button, self.relaunch_button, self.export_button, self.export_link],
                         layout=W.Layout(align_items="center"))

        # Charts: every chart of `CHARTS`, each with the snippet that shows it alone.
        self.charts = {key: TimeChart.from_spec(spec) for key, spec in CHARTS.items()}
        self.chart_grid = W.GridBox(
            [c.widget for c in self.charts.values()],
            layout=W.Layout(grid_template_columns="repeat(auto-fill, minmax(300px, 1fr))", grid_gap="6px",
                            width="100%"),
        )
        self.chart_grid.add_class("modeldeploy-charts")
        self.metrics_note = W.HTML("")

        self.key_usage = KeyUsagePanel()
        self.request_log = RequestLogPanel()
        # Runs only from its own button: a sweep loads the engine.
        self.benchmark = BenchmarkPanel(self.ref, self.client)

        self.log = W.HTML("", layout=W.Layout(width="100%"))
        self.log.add_class("modeldeploy-log")

        def section(title: str) -> W.HTML:
            return W.HTML(f"<h4 style='margin:10px 0 4px 0'>{html.escape(title)}</h4>")

        self.widget.children = [
            W.HBox([self.title, self.status], layout=W.Layout(align_items="center", grid_gap="12px")),
            self.reason, self.info, self.error_line, self.key_row, actions,
            section("Test"), test_box,
            section("Models"), self.models_table,
            section("Metrics"), self.metrics_note, self.chart_grid,
            section("Usage per key"), self.key_usage.widget,
            section("Requests"), self.request_log.widget,
            section("Console"), self.log,
            section("Benchmark"), self.benchmark.widget,
        ]

    # Polling ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """One poll: record, deployment metrics, host metrics, console tail (each on its own)."""
        with self._lock:
            for name, step in (("record", self.refresh_record), ("metrics", self.refresh_metrics),
                               ("host", self.refresh_host), ("keys", self.refresh_keys), ("log", self.refresh_log)):
                try:
                    step()
                    self.errors.pop(name, None)
                except (ModelDeployError, httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
                    self.errors[name] = str(exc) or type(exc).__name__
            self._show_errors()

    def _show_errors(self) -> None:
        text = "; ".join(f"{k}: {v}" for k, v in self.errors.items() if k in ("record", "log"))
        value = f"<span style='color:var(--jp-error-color1,#c62828)'>{html.escape(text)}</span>" if text else ""
        if self.error_line.value != value:
            self.error_line.value = value
        notes = []
        if "metrics" in self.errors:
            notes.append(f"deployment metrics unavailable ({self.errors['metrics']})")
        if "host" in self.errors:
            notes.append(f"host metrics unavailable ({self.errors['host']})")
        note = f"<span style='color:var(--jp-ui-font-color2,#888)'>{html.escape('; '.join(notes))}</span>"
        note = note if notes else ""
        if self.metrics_note.value != note:
            self.metrics_note.value = note

    def _note_gpus(self) -> None:
        """Say 'no GPU' at once when the server has none (host metrics may come later or never)."""
        try:
            status = self.client.status()
        except (ModelDeployError, AttributeError):
            return
        if isinstance(status, dict) and status.get("gpu") is False:
            for key in ("gpu_util", "gpu_memory", "gpu_temp"):
                self.charts[key].show_note("no GPU")

    def refresh_record(self) -> None:
        record = self.client.get(self.ref)
        first = not self.record
        self.record = record
        self.ref = self.feed.ref = record.get("id", self.ref)
        if first:
            for key, chart in self.charts.items():
                chart.set_snippet(snippet(str(record.get("name") or self.ref), key))
        status = record.get("status")
        self.title.value = (
            f"<h3 style='margin:4px 0'>{html.escape(str(record.get('name')))} "
            f"<small style='color:var(--jp-ui-font-color2,#888)'>{html.escape(str(record.get('kind')))} · "
            f"{html.escape(str(record.get('id')))}</small></h3>"
        )
        self.status.value = status_badge(status) + (
            " " + progress_html(record.get("progress")) if status == "loading" else "")
        self.reason.value = reason_html(record) if status in ("failed", "stopped") else ""
        config = record.get("config") or {}
        limit_h = config.get("idle_time_limit_hours")
        idle = record.get("idle_for_s")
        idle_text = format_duration(idle) if record.get("serving") else "—"
        if limit_h:
            idle_text += f" (stops after {format_duration(float(limit_h) * 3600)} idle)"
        rows = [
            ("Idle time", html.escape(idle_text)),
            ("Endpoint URL", f"<code>{html.escape(str(record.get('endpoint_url', '')))}</code>"),
            ("API base", f"<code class='modeldeploy-api-base'>{html.escape(str(record.get('api_base', '')))}</code>"),
            ("Model", html.escape(str(record.get("model") or ", ".join(model_names(record))))),
            ("In flight", html.escape(str(record.get("requests_in_flight", 0)))),
            ("Queue", html.escape(queue_summary(record.get("queue") or {}))),
            ("Placement", html.escape(replica_summary(record))
             + "".join(f"<div class='modeldeploy-replica'>{html.escape(line)}</div>" for line in replica_lines(record))),
        ]
        if self.totals:
            by_status = self.totals.get("by_status") or {}
            detail = ", ".join(f"{k}: {v}" for k, v in sorted(by_status.items()))
            count = f"{self.totals.get('requests', 0)}" + (f" ({detail})" if detail else "")
            rows.append(("Requests", html.escape(count)))
            rows.append(("Tokens", html.escape(
                f"{self.totals.get('prompt_tokens', 0)} prompt, {self.totals.get('completion_tokens', 0)} completion")))
        if load_times(record):
            rows.append(("Last load", html.escape(load_times(record))))
        for note in record.get("notices") or []:
            rows.append(("Notice", html.escape(str(note))))
        self.info.value = "<table style='border-collapse:collapse'>" + "".join(
            f"<tr><td style='padding:1px 12px 1px 0;color:var(--jp-ui-font-color2,#666)'>{k}</td><td>{v}</td></tr>"
            for k, v in rows
        ) + "</table>"
        names = model_names(record)
        if list(self.model_pick.options) != names:
            current = self.model_pick.value
            self.model_pick.options = names
            self.model_pick.value = current if current in names else (names[0] if names else None)
        actions = record.get("actions", [])
        self.stop_button.disabled = "stop" not in actions
        self.relaunch_button.disabled = "relaunch" not in actions
        models = record.get("models") or []
        signature = json.dumps(models, sort_keys=True)
        if signature != self._models_signature:
            self._models_signature = signature
            self.models_table.value = self._models_html(models)
        if first:
            self._show_key()
        self._update_command()

    @staticmethod
    def _models_html(models: list[dict[str, Any]]) -> str:
        if not models:
            return "<i>no models</i>"
        head = "".join(f"<th style='text-align:left;padding:2px 12px 2px 0'>{h}</th>"
                       for h in ("Name", "State", "Endpoint"))
        body = "".join(
            "<tr>"
            f"<td style='padding:2px 12px 2px 0'>{html.escape(str(m.get('name')))}</td>"
            f"<td style='padding:2px 12px 2px 0'>{html.escape(str(m.get('state') or '—'))}</td>"
            f"<td><code>{html.escape(str(m.get('endpoint') or ''))}</code></td></tr>"
            for m in models
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def refresh_metrics(self) -> None:
        """Fetch the deployment's new samples and redraw its charts."""
        self.feed.fetch_deployment()
        self.totals = self.feed.totals
        self._draw("deployment")

    def refresh_host(self) -> None:
        """Fetch the host's (and GPUs') new samples and redraw their charts."""
        self.feed.fetch_host()
        self.host_seen = True
        self._draw("host")

    def refresh_keys(self) -> None:
        """Per-key usage of the last hour (the table and the chart) and the newest requests."""
        self.key_usage.show(self.client.usage(deployment=self.ref, since=time.time() - KEY_WINDOW_S))
        self.request_log.show(self.client.requests(deployment=self.ref, limit=LOG_ROWS))

    def _draw(self, source: str) -> None:
        for key, spec in CHARTS.items():
            if source in self.feed.sources(spec):
                draw(self.charts[key], self.feed, spec)

    def refresh_log(self) -> None:
        lines = self.client.logs(self.ref, tail=self.log_lines)
        signature = (len(lines), lines[-1] if lines else None, lines[0] if lines else None)
        if signature == self._log_signature:
            return
        self._log_signature = signature
        text = html.escape("\n".join(lines)) or "(no output yet)"
        # column-reverse keeps the scroll position at the newest line without any script.
        self.log.value = (
            "<div style='display:flex;flex-direction:column-reverse;max-height:280px;overflow:auto;"
            "background:var(--jp-layout-color2,#f5f5f5);border:1px solid var(--jp-border-color2,#ddd)'>"
            "<pre style='margin:0;padding:4px;font-size:11px;line-height:1.35;white-space:pre-wrap;"
            f"flex:none;overflow:visible'>{text}</pre></div>"
        )

    # Key, test command, actions -----------------------------------------------------------

    def _masked(self) -> str:
        key = self.api_key or ""
        return key[:4] + "•" * max(8, len(key) - 8) + key[-4:] if len(key) > 10 else "•" * len(key)

    def _show_key(self) -> None:
        if self.record.get("public"):
            self.key_text.value = ""
            self.key_text.placeholder = "public endpoint: no key needed"
            self.copy.value = ""
            return
        if not self.api_key:
            self.key_text.value = ""
            self.copy.value = ""
        else:
            self.key_text.value = self.api_key if self.reveal.value else self._masked()
            self.copy.value = copy_button(self.api_key, "Copy key")
        self.reveal.description = "Hide" if self.reveal.value else "Reveal"
        self.reveal.icon = "eye-slash" if self.reveal.value else "eye"
        self._update_command()

    def _generate_key(self) -> None:
        try:
            token = self.client.create_token(deployment=self.record.get("id", self.ref),
                                             name=f"dashboard-{int(time.time())}")
        except ModelDeployError as exc:
            self.key_note.value = error_html(str(exc))
            return
        self.api_key = token["token"]
        self.key_note.value = "<i>new key: shown only here, it is stored hashed: copy it now</i>"
        self._show_key()

    def _update_command(self) -> None:
        """Ask the server for the test command (with the key in hand) and show it, the key masked."""
        if not self.record:
            return
        model = self.model_pick.value or (model_names(self.record) or [""])[0]
        signature = (self.ref, self.record.get("api_base"), self.api_key, self.prompt.value, model)
        if signature != self._test_signature:
            try:
                self.test = self.client.test_command(self.ref, key=self.api_key, prompt=self.prompt.value, model=model)
            except ModelDeployError as exc:
                self.command_note.value = error_html(f"no test command: {exc}")
                return
            self._test_signature = signature
            if self.test.get("key_source") == "fixed" and not self.api_key:
                self.api_key = self.test.get("key")
                self._show_key()
                return
        command = self.test.get("command", "")
        source = self.test.get("key_source")
        shown = command
        if self.api_key and not self.reveal.value:
            shown = command.replace(self.api_key, self._masked())
        if self.command.value != shown:
            self.command.value = shown
        copy = copy_button(command, "Copy command")
        if self.copy_command.value != copy:
            self.copy_command.value = copy
        if source == "missing":
            note = ("<span style='color:var(--jp-warn-color1,#e65100)'>&#9888; No key in hand: this command reads "
                    "<code>$MODELDEPLOY_API_KEY</code>. Generate a key to get a command that works as pasted, or run "
                    f"<code>{html.escape(str(self.test.get('export', '')))}</code> first.</span>")
        elif source == "fixed":
            note = "<i>The command carries the deployment's own key.</i>"
        elif source == "given":
            note = "<i>The command carries your key: it works as pasted.</i>"
        else:
            note = ""
        if self.command_note.value != note:
            self.command_note.value = note
        self.command_key.layout.display = "" if source == "missing" else "none"

    def send_request(self) -> str:
        """Run the test request now; returns the readable answer (raises on errors)."""
        record = self.record or self.client.get(self.ref)
        if not record.get("public") and not self.api_key:
            self._generate_key()
            if not self.api_key:
                raise ModelDeployError("no API key: generating one failed")
        self._update_command()
        request = self.test.get("request") or {}
        url, body = request["url"], request["body"]
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        started = time.monotonic()
        response = httpx.post(url, json=body, headers=headers, timeout=300)
        elapsed = time.monotonic() - started
        try:
            data = response.json()
        except ValueError:
            data = response.text
        if response.status_code >= 400:
            message = data.get("error") if isinstance(data, dict) else data
            if isinstance(message, dict):
                message = message.get("message", message)
            raise ModelDeployError(f"HTTP {response.status_code}: {message}", response.status_code)
        usage = data.get("usage") if isinstance(data, dict) else None
        self.last_answer = summarize_answer(record, data)
        self.last_meta = f"{elapsed * 1000:.0f} ms" + (f", usage {json.dumps(usage)}" if usage else "")
        return self.last_answer

    def _send_clicked(self) -> None:
        self.send.disabled = True
        self.answer.value = "<i>sending…</i>"

        def work() -> None:
            try:
                answer = self.send_request()
                self.answer.value = (
                    "<div class='modeldeploy-answer-ok' style='border-left:3px solid var(--jp-success-color1,#388e3c);"
                    f"padding:4px 8px;white-space:pre-wrap'>{html.escape(answer)}</div>"
                    f"<small style='color:var(--jp-ui-font-color2,#888)'>{html.escape(self.last_meta)}</small>"
                )
            except Exception as exc:
                self.answer.value = (
                    "<div class='modeldeploy-answer-error' style='color:var(--jp-error-color1,#c62828)'>"
                    f"{html.escape(str(exc))}</div>"
                )
            finally:
                self.send.disabled = False
                self.poller.poke()

        threading.Thread(target=work, name="modeldeploy-send", daemon=True).start()

    def _action(self, name: str) -> None:
        try:
            record = self.client.stop(self.ref) if name == "stop" else self.client.relaunch(self.ref)
            self.error_line.value = f"<i>{html.escape(name)}: {html.escape(str(record.get('status')))}</i>"
        except ModelDeployError as exc:
            self.error_line.value = error_html(str(exc))
        self.poller.poke()

    def _export(self) -> None:
        try:
            data = self.client.export(self.ref)
        except ModelDeployError as exc:
            self.export_link.value = error_html(str(exc))
            return
        self.export_link.value = download_link(data, f"{self.record.get('name', self.ref)}.json")

    # Lifecycle -------------------------------------------------------------------------

    def stop_polling(self) -> None:
        """Stop the background updates (the widget stays as it is)."""
        self.poller.stop()

    def shutdown(self) -> None:
        """Stop polling (called when the widget is closed)."""
        self.poller.stop()
