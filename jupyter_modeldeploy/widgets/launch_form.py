"""The launch form: pick a kind, fill the schema-built fields, launch, import, export or clone.

The fields come from the kind's JSON Schema (see `schema_form`); the server validates, and
its errors appear next to the fields they name.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from ..client import ModelDeployClient, ModelDeployError
from ..formats import format_bytes
from .common import Panel, download_link
from .schema_form import SchemaForm

#: How the kind selector names each kind.
KIND_LABELS = {
    "llamacpp": "llama.cpp (GGUF models)",
    "llm": "vLLM (Hugging Face models)",
    "embedding": "Embeddings (sentence-transformers)",
}


def _local_schemas() -> dict[str, dict[str, Any]]:
    from ..config import all_schemas

    return all_schemas()


def _uploaded_files(value: Any) -> list[tuple[str, bytes]]:
    """(name, content) of a FileUpload's value (ipywidgets 8 tuple of dicts, or 7's dict)."""
    files = []
    items = value.values() if isinstance(value, dict) else value or ()
    for item in items:
        content = item.get("content", b"")
        if isinstance(content, memoryview):
            content = content.tobytes()
        name = item.get("name") or (item.get("metadata") or {}).get("name", "config.json")
        files.append((name, bytes(content)))
    return files


class LaunchForm(Panel):
    """A launch form for every kind, over the REST API."""

    def __init__(self, kind: str | None = None, client: ModelDeployClient | None = None, *,
                 schemas: dict[str, dict[str, Any]] | None = None, values: dict[str, Any] | None = None,
                 on_launched: Callable[[dict[str, Any]], None] | None = None):
        self.widget = self._make_box("modeldeploy-launch-form")
        self._client = client
        if schemas is None:
            schemas = client.schemas() if client is not None else _local_schemas()
        self.schemas = schemas
        self.on_launched = on_launched
        self.forms: dict[str, SchemaForm] = {}
        self.last_record: dict[str, Any] | None = None

        defaults: dict[str, Any] = {}
        if kind is None and client is not None:
            # The server knows what can run here and what was launched last.
            try:
                defaults = client.launch_defaults()
            except (ModelDeployError, AttributeError):
                defaults = {}
            kind = defaults.get("kind")
            if values is None and defaults.get("values"):
                values = {"kind": kind, **defaults["values"]}
        kind = kind if kind in schemas else ("llamacpp" if "llamacpp" in schemas else next(iter(schemas)))
        self.kind_pick = W.Dropdown(options=[(KIND_LABELS.get(k, k), k) for k in schemas], value=kind,
                                    description="Kind", layout=W.Layout(width="360px"))
        self.kind_pick.add_class("modeldeploy-kind")
        self.kind_pick.observe(lambda _: self._show_kind(), names="value")
        self.launch_button = W.Button(description="Launch", icon="rocket", button_style="primary")
        self.launch_button.add_class("modeldeploy-launch")
        self.launch_button.on_click(lambda _: self.launch())
        self.validate_button = W.Button(description="Validate", icon="check")
        self.validate_button.on_click(lambda _: self.validate())
        self.upload = W.FileUpload(accept=".json,application/json", multiple=False,
                                   description="Import configuration", layout=W.Layout(width="220px"))
        self.upload.observe(lambda change: self._on_upload(change["new"]), names="value")
        self.export_button = W.Button(description="Export configuration", icon="download",
                                      layout=W.Layout(width="200px"))
        self.export_button.on_click(lambda _: self.export())
        self.export_link = W.HTML("")
        self.clone_pick = W.Dropdown(options=[("Clone from…", "")], value="", layout=W.Layout(width="300px"))
        self.clone_pick.observe(lambda change: change["new"] and self.clone_from(change["new"]), names="value")
        self.refresh_button = W.Button(icon="refresh", tooltip="Reload the deployments list",
                                       layout=W.Layout(width="40px"))
        self.refresh_button.on_click(lambda _: self.refresh_deployments())
        self.result = W.HTML("")
        self.result.add_class("modeldeploy-launch-result")
        self.fit = W.HTML("")  # the fit check, live: the server's memory estimate as options change
        self.fit.add_class("modeldeploy-fit")
        self.force = W.Checkbox(value=False, description="Launch even though it does not fit", indent=False,
                                layout=W.Layout(display="none"))
        self.last_fit: dict[str, Any] | None = None
        self.form_box = W.Box(layout=W.Layout(width="100%"))
        self.widget.children = [
            self.kind_pick,
            W.HBox([self.clone_pick, self.refresh_button, self.upload], layout=W.Layout(flex_flow="row wrap")),
            self.form_box,
            self.fit,
            self.force,
            W.HBox([self.launch_button, self.validate_button, self.export_button, self.export_link],
                   layout=W.Layout(flex_flow="row wrap", align_items="center")),
            self.result,
        ]
        self._show_kind()
        if values:
            self.set_value(values)
        if client is not None:
            self.refresh_deployments()

    @property
    def client(self) -> ModelDeployClient:
        if self._client is None:
            self._client = ModelDeployClient()
        return self._client

    @property
    def form(self) -> SchemaForm:
        """The form of the selected kind."""
        kind = self.kind_pick.value
        if kind not in self.forms:
            self.forms[kind] = SchemaForm(self.schemas[kind])
            self.forms[kind].on_change(self.check_fit)
        return self.forms[kind]

    def _show_kind(self) -> None:
        self.form_box.children = [self.form.widget]
        self.export_link.value = ""
        self.check_fit()

    def check_fit(self) -> dict[str, Any] | None:
        """Ask the server whether the form's configuration fits in memory now, and show it (hidden when unknown)."""
        if self._client is None:
            return None
        try:
            fit = self.client.validate(self.value).get("fit")
        except ModelDeployError:
            fit = None
        self._show_fit(fit)
        return fit

    def _show_fit(self, fit: dict[str, Any] | None) -> None:
        self.last_fit = fit
        self.force.layout.display = "" if fit and fit.get("fits") is False else "none"
        if not fit:
            self.fit.value = ""
            return
        color = {True: "var(--jp-success-color1,#2e7d32)", False: "var(--jp-error-color1,#c62828)"}.get(
            fit.get("fits"), "var(--jp-ui-font-color2,#666)")
        parts = "".join(f"<li>{html.escape(p['where'])} {format_bytes(p['bytes'])}: {html.escape(p['what'])}</li>"
                        for p in fit.get("estimate", {}).get("parts", []))
        self.fit.value = (f"<div style='border-left:3px solid {color};padding:2px 8px'><b>Memory</b>: "
                          f"{html.escape(fit.get('message', ''))}"
                          + (f"<details><summary>estimate</summary><ul>{parts}</ul></details>" if parts else "")
                          + "</div>")

    @property
    def value(self) -> dict[str, Any]:
        """The configuration the form holds (secrets included, for launching)."""
        return self.form.value()

    def set_value(self, config: dict[str, Any]) -> None:
        """Fill the form from a configuration (switching kind if it names one)."""
        kind = config.get("kind")
        if kind in self.schemas and kind != self.kind_pick.value:
            self.kind_pick.value = kind
        unknown = self.form.set_value(config)
        if unknown:
            self.form.show_errors([{"field": k, "message": "unknown field"} for k in unknown],
                                  "The configuration has fields this kind does not know:")

    def _say(self, text_html: str, *, error: bool = False) -> None:
        color = "var(--jp-error-color1,#c62828)" if error else "inherit"
        self.result.value = f"<div style='color:{color}'>{text_html}</div>"

    def _report_error(self, exc: ModelDeployError) -> None:
        if exc.errors:
            self.form.show_errors(exc.errors)
            self._say("This configuration cannot start: fix the fields marked above.", error=True)
        else:
            self.form.clear_errors()
            self._say(html.escape(str(exc)), error=True)

    def validate(self) -> dict[str, Any] | None:
        """Ask the server to validate the form; errors go next to their fields."""
        try:
            answer = self.client.validate(self.value)
        except ModelDeployError as exc:
            self._report_error(exc)
            return None
        self._show_fit(answer.get("fit"))
        self.form.clear_errors()
        notices = "".join(f"<li>{html.escape(n)}</li>" for n in answer.get("notices") or [])
        self._say("Configuration is valid." + (f"<ul>{notices}</ul>" if notices else ""))
        return answer

    def launch(self) -> dict[str, Any] | None:
        """Check the form's configuration on the server, then launch it; returns the new record (None on errors).

        A configuration that cannot start (a model path that does not exist, a file that is not
        GGUF, a hub repo the offline server does not have) keeps the form open, the error at its field.
        """
        self.launch_button.disabled = True
        try:
            config = self.value
            self.client.validate(config)
            record = self.client.launch(config, force=self.force.value)
        except ModelDeployError as exc:
            self._report_error(exc)
            return None
        finally:
            self.launch_button.disabled = False
        self.form.clear_errors()
        self.last_record = record
        self._say(
            f"Launched <b>{html.escape(record['name'])}</b> ({html.escape(record['id'])}): "
            f"{html.escape(record['status'])}. API base: <code>{html.escape(record.get('api_base', ''))}</code>"
        )
        self.refresh_deployments()
        if self.on_launched is not None:
            self.on_launched(record)
        return record

    def export(self) -> dict[str, Any]:
        """Offer the form's configuration (no secrets) as a JSON download; returns it."""
        data = self.form.export_value()
        self.export_link.value = download_link(data, f"{data.get('name') or 'deployment'}.json")
        return data

    def import_config(self, data: dict[str, Any] | str | bytes) -> None:
        """Fill the form from an exported configuration (JSON text or dict)."""
        if isinstance(data, (str, bytes)):
            try:
                data = json.loads(data)
            except ValueError as exc:
                self._say(f"Not a JSON configuration: {html.escape(str(exc))}", error=True)
                return
        if not isinstance(data, dict):
            self._say("A configuration is a JSON object.", error=True)
            return
        self.form.clear_errors()
        self.set_value(data)
        if not self.form.message.value:
            self._say(f"Imported the configuration of <b>{html.escape(str(data.get('name', '')))}</b>.")

    def _on_upload(self, value: Any) -> None:
        files = _uploaded_files(value)
        if not files:
            return
        _name, content = files[-1]
        self.import_config(content)
        try:
            self.upload.value = ()
        except Exception:
            pass

    def refresh_deployments(self) -> None:
        """Reload the clone dropdown from the server."""
        try:
            records = self.client.list()
        except ModelDeployError:
            return
        options: list[tuple[str, Any]] = [("Clone from…", "")]
        options += [(f"{r['name']} ({r['kind']}, {r['status']})", r["id"]) for r in records]
        self.clone_pick.options = options

    def clone_from(self, ref: str) -> None:
        """Prefill the form from an existing deployment under a new name."""
        try:
            data = self.client.export(ref)
        except ModelDeployError as exc:
            self._say(html.escape(str(exc)), error=True)
            return
        data["name"] = f"{data.get('name', 'deployment')}-copy"
        data["route"] = ""
        self.set_value(data)
        self._say(f"Prefilled from <b>{html.escape(ref)}</b>: change the name and launch.")
        self.clone_pick.value = ""
