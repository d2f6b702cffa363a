"""Dashboard, endpoints table, launch form, charts and poller over a fake REST client (no server)."""

from __future__ import annotations

import html
import json
import math
import threading
import time
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pytest

from jupyter_modeldeploy.client import ModelDeployError
from jupyter_modeldeploy.config import all_schemas, export_config, parse_config
from jupyter_modeldeploy.server_ext import failure_summary, launch_defaults
from jupyter_modeldeploy.server_ext import test_command as server_test_command
from jupyter_modeldeploy.widgets.charts import SeriesWindow, TimeChart, format_number, nice_ceiling, tick_format, tick_values
from jupyter_modeldeploy.widgets.common import download_link, format_duration, status_timeline
from jupyter_modeldeploy.widgets.dashboard import Dashboard, summarize_answer
from jupyter_modeldeploy.widgets.endpoints import DashboardApp, EndpointsTable, query_params
from jupyter_modeldeploy.widgets.launch_form import LaunchForm
from jupyter_modeldeploy.widgets.poller import Poller

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

NOW = 1_800_000_000.0


@pytest.fixture(autouse=True)
def _bench_dir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dashboards read saved benchmark results: from an empty folder here, not the user's."""
    monkeypatch.setenv("MODELDEPLOY_BENCH_DIR", str(tmp_path / "benchmarks"))


def record(name: str = "smol", status: str = "active", **extra: Any) -> dict[str, Any]:
    config = export_config(parse_config({"kind": "llamacpp", "name": name, "model": "/m/smol.gguf"}))
    base = "http://127.0.0.1:8888/modeldeploy/endpoints/r-1"
    return {
        "id": f"id-{name}", "name": name, "kind": "llamacpp", "model": "/m/smol.gguf", "status": status,
        "status_reason": None, "idle_for_s": 42.0, "requests_in_flight": 0, "public": False,
        "status_history": [{"status": "loading", "at": NOW - 60, "reason": None},
                           {"status": status, "at": NOW - 50, "reason": None}],
        "models": [{"name": "smol", "state": "on_device", "endpoint": f"{base}/smol/v1"}],
        "endpoint_url": base, "api_base": f"{base}/v1", "config": config, "created_at": NOW - 60,
        **server_facts(status), **extra,
    }


def server_facts(status: str) -> dict[str, Any]:
    """The facts the server derives for a status (as server_ext/records.py does)."""
    live = status not in ("stopped", "failed")
    actions = (["stop"] if status != "stopping" else []) if live else ["relaunch", "delete"]
    return {"live": live, "serving": status in ("active", "idle", "sleeping", "waking"),
            "actions": actions + ["clone", "export", "logs"]}


class FakeClient:
    """Answers like `ModelDeployClient`, from memory; counts calls."""

    def __init__(self, records: list[dict[str, Any]] | None = None, *, gpus: bool = False,
                 metrics: bool = True):
        self.records = {r["id"]: r for r in (records or [record()])}
        self.gpus = gpus
        self.with_metrics = metrics
        self.calls: list[tuple[str, Any]] = []
        self.t = NOW
        self.launched: list[dict[str, Any]] = []
        self.free_host_bytes = 64 * 1024**3

    def _find(self, ref: str) -> dict[str, Any]:
        for r in self.records.values():
            if ref in (r["id"], r["name"]):
                return r
        raise ModelDeployError(f"no deployment {ref!r}", 404)

    def get(self, ref: str) -> dict[str, Any]:
        self.calls.append(("get", ref))
        return self._find(ref)

    def list(self) -> list[dict[str, Any]]:
        self.calls.append(("list", None))
        return list(self.records.values())

    def status(self) -> dict[str, Any]:
        return {"gpu": self.gpus}

    def schemas(self, kind: str | None = None) -> dict[str, Any]:
        return all_schemas()

    def metrics(self, ref: str, since: float | None = None) -> dict[str, Any]:
        self.calls.append(("metrics", since))
        if not self.with_metrics:
            raise ModelDeployError("HTTP 404", 404)
        self.t += 2
        ts = [self.t - 1, self.t]
        return {"t": ts, "series": {"requests_per_s": [1, 2], "latency_p50_ms": [10, 11], "tokens_per_s": [5, 6],
                                    "process_cpu_percent": [50, 60]},  # some keys missing on purpose
                "totals": {"requests": 7, "by_status": {"200": 7}, "prompt_tokens": 3, "completion_tokens": 4}}

    def host_metrics(self, since: float | None = None) -> dict[str, Any]:
        ts = [self.t - 1, self.t]
        gpus = [{"index": 0, "name": "H100", "series": {"utilization_percent": [10, 20],
                                                         "memory_used_bytes": [1e9, 2e9],
                                                         "temperature_celsius": [40, 41]}}] if self.gpus else []
        return {"t": ts, "series": {"cpu_percent": [10, 12], "memory_used_bytes": [4e9, 4.1e9],
                                    "net_rx_bytes_per_s": [100, 200], "net_tx_bytes_per_s": [50, 60],
                                    "disk_read_bytes_per_s": [0, 0], "disk_write_bytes_per_s": [1, 2]},
                "gpus": gpus}

    def logs(self, ref: str, tail: int = 200) -> list[str]:
        return [f"line {i}" for i in range(3)]

    def requests(self, **filters: Any) -> list[dict[str, Any]]:
        self.calls.append(("requests", filters))
        row = {"at": 1_700_000_000.0, "deployment_id": "d-1", "model": "smol", "method": "POST",
               "route": "/v1/chat/completions", "streamed": False}
        return [
            {**row, "id": 2, "key_id": "t-a", "key_name": "alice", "status": 200, "latency_ms": 12.34,
             "first_token_ms": None, "prompt_tokens": 5, "completion_tokens": 9, "has_bodies": True},
            {**row, "id": 1, "key_id": "none", "key_name": None, "status": 401, "latency_ms": 0.5,
             "first_token_ms": None, "prompt_tokens": None, "completion_tokens": None, "has_bodies": False},
        ]

    def usage(self, **filters: Any) -> list[dict[str, Any]]:
        self.calls.append(("usage", filters))
        row = {"minute": 1_700_000_000, "deployment_id": "d-1", "deployment": "smol", "model": "smol", "errors": 0}
        return [
            {**row, "key_id": "t-a", "key_name": "alice", "requests": 2, "prompt_tokens": 5, "completion_tokens": 9},
            {**row, "key_id": "t-a", "key_name": "alice", "requests": 1, "prompt_tokens": 1, "completion_tokens": 3,
             "minute": 1_700_000_060},
            {**row, "key_id": "api-key", "key_name": None, "requests": 1, "errors": 1, "prompt_tokens": 0,
             "completion_tokens": 0, "model": "other"},
        ]

    def export(self, ref: str, include_secrets: bool = False) -> dict[str, Any]:
        return dict(self._find(ref)["config"])

    def create_token(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("create_token", kwargs))
        return {"id": "t-1", "token": "md-secretsecretsecret"}

    def stop(self, ref: str) -> dict[str, Any]:
        r = self._find(ref)
        r.update(status="stopped", **server_facts("stopped"))
        return r

    def relaunch(self, ref: str) -> dict[str, Any]:
        r = self._find(ref)
        r.update(status="loading", **server_facts("loading"))
        return r

    def clone(self, ref: str, name: str, overrides: Any = None, *, start: bool = True,
              include_secrets: bool = True) -> dict[str, Any]:
        new = record(name, "loading" if start else "stopped")
        self.records[new["id"]] = new
        return new

    def launch(self, config: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        try:
            parsed = parse_config(config)
        except ValueError as exc:
            raise ModelDeployError("invalid configuration", 422, exc.errors) from None
        answer = self.validate(config)
        if answer["fit"]["fits"] is False and not kwargs.get("force"):
            raise ModelDeployError(f"deployment {parsed.name!r} {answer['fit']['message']}", 409)
        self.launched.append(config)
        new = record(parsed.name, "loading")
        self.records[new["id"]] = new
        return new

    def launch_defaults(self) -> dict[str, Any]:
        return {"kind": "llamacpp", "values": {"model": "/bundled/smol.gguf"}, "why": "test"}

    def test_command(self, ref: str, *, key: str | None = None, prompt: str | None = None,
                     model: str | None = None) -> dict[str, Any]:
        """As the server answers, from the same builder (`test_command.test_command`)."""
        self.calls.append(("test_command", key))
        r = self._find(ref)
        path = "/embeddings" if r["kind"] == "embedding" else "/chat/completions"
        body = ({"model": model, "input": [prompt]} if r["kind"] == "embedding" else
                {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 128})
        request = {"url": r["api_base"] + path, "body": body, "needs_key": not r.get("public")}
        source = "public" if r.get("public") else "given" if key else "missing"
        answer = {"command": server_test_command.test_command(request, key), "request": request, "key_source": source}
        if source == "missing":
            answer["export"] = "export MODELDEPLOY_API_KEY=<an API key>"
        return answer

    def validate(self, config: dict[str, Any]) -> dict[str, Any]:
        """As `/validate` answers: the fields, then the server's preflight (model files)."""
        from jupyter_modeldeploy.server_ext.validate import preflight

        self.calls.append(("validate", config.get("name")))
        try:
            parsed = parse_config(config)
        except ValueError as exc:
            raise ModelDeployError("invalid configuration", 422, exc.errors) from None
        errors = preflight(parsed, offline=True)
        if errors:
            raise ModelDeployError("invalid configuration", 422, errors)
        from jupyter_modeldeploy.fit import Free, check, estimate

        fit = check(estimate(parsed), Free(host_bytes=self.free_host_bytes)).to_json()
        return {"ok": True, "config": export_config(parsed), "notices": [], "fit": fit}


def test_series_window_is_bounded_and_skips_old_samples() -> None:
    w = SeriesWindow(size=10)
    for start in range(0, 100, 5):
        w.extend([start + i for i in range(5)], {"a": [float(start + i) for i in range(5)]})
    assert len(w) == 10 and len(w.column("a")) == 10
    assert w.column("a")[-1] == 99.0
    assert w.extend([50, 99], {"a": [1, 1]}) == 0  # not newer: ignored
    w.extend([100], {"b": [3]})
    assert np.isnan(w.column("a")[-1]) and w.column("b")[-1] == 3.0 and np.isnan(w.column("b")[0])
    assert np.isnan(w.column("missing")).all()
    assert w.times().dtype == np.dtype("datetime64[ms]")


def test_chart_marks_are_made_once_and_get_only_finite_points() -> None:
    chart = TimeChart("Requests", unit="req/s", labels=["r", "absent"])
    marks = list(chart.figure.marks)
    assert len(marks) == 2 and all(len(m.y) == 0 for m in marks)  # starts empty, on a valid domain
    assert chart.y_scale.min == 0 and chart.y_scale.max == 1 and chart.x_scale.min < chart.x_scale.max
    w = SeriesWindow(size=5)
    w.extend([NOW + 1, NOW + 2, NOW + 3], {"r": [1, None, 3]})
    chart.update([("r", w, "r"), ("absent", w, "nope")])
    assert list(chart.figure.marks) == marks  # the figure's marks are never replaced
    assert list(marks[0].y) == [1, 3] and len(marks[0].x) == 2 and len(marks[1].y) == 0
    assert chart.points == 2
    w.extend([NOW + 4, NOW + 5, NOW + 6, NOW + 7], {"r": [4, 5, math.nan, 7.3]})
    chart.update([("r", w, "r")])
    assert list(chart.figure.marks) == marks and np.isfinite(marks[0].y).all() and list(marks[0].y) == [3, 4, 5, 7.3]
    assert "7.3 req/s" in chart.header.value
    # Rounded axes from zero; the time window ends at the last sample.
    assert chart.y_scale.min == 0 and chart.y_scale.max == 8
    assert chart.x_scale.max == datetime.fromtimestamp(NOW + 7, timezone.utc).replace(tzinfo=None)
    assert (chart.x_scale.max - chart.x_scale.min).total_seconds() >= 60
    zeros = SeriesWindow(size=5)
    zeros.extend([1, 2], {"z": [0, 0]})
    flat = TimeChart("Flat")
    flat.update([("z", zeros, "z")])
    assert flat.y_scale.max == 1.0  # an all-zero series keeps a usable axis
    chart.show_note("no GPU")
    assert chart.figure not in chart.widget.children and "no GPU" in chart.note.value


def test_axis_rounding_and_tick_formats() -> None:
    assert [nice_ceiling(v) for v in (0, -3, math.nan, 0.7, 1, 1.1, 2.2, 3, 7.7, 12, 100, 105, 260)] == [
        1, 1, 1, 0.8, 1, 1.2, 2.5, 3, 8, 12, 100, 120, 300]
    assert tick_format(1) == ",.1~f" and tick_format(10) == ",.0f" and tick_format(0.01) == ",.3~f"
    assert tick_format(2.5) == ",.1~f" and "undefined" not in tick_format(1e-12)
    assert list(tick_values(1)) == [0, 0.2, 0.4, 0.6, 0.8, 1] and list(tick_values(2.5)) == [0, 0.5, 1, 1.5, 2, 2.5]
    assert list(tick_values(20)) == [0, 5, 10, 15, 20] and list(tick_values(500)) == [0, 100, 200, 300, 400, 500]
    assert list(tick_values(1.2)) == [0, 0.3, 0.6, 0.9, 1.2] and list(tick_values(120)) == [0, 30, 60, 90, 120]


def test_poller_ticks_and_stops() -> None:
    ticks = []
    errors = []

    def tick() -> None:
        ticks.append(time.monotonic())
        if len(ticks) == 2:
            raise RuntimeError("boom")

    poller = Poller(tick, 0.02, on_error=errors.append).start()
    deadline = time.monotonic() + 5
    while len(ticks) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    poller.stop(wait=True)
    count = len(ticks)
    time.sleep(0.1)
    assert count >= 4 and len(ticks) == count and not poller.running
    assert [str(e) for e in errors] == ["boom"]


def test_dashboard_shows_the_deployment_and_polls_metrics() -> None:
    client = FakeClient()
    dash = Dashboard("smol", client, autostart=False)
    dash.refresh()
    assert "active" in dash.status.value
    assert "42 s" in dash.info.value and "/modeldeploy/endpoints/r-1/v1" in dash.info.value
    assert "on_device" in dash.models_table.value
    assert "$MODELDEPLOY_API_KEY" in dash.command.value and "/chat/completions" in dash.command.value
    assert dash.charts["requests"].points == 2 and dash.charts["tokens_per_s"].points == 2
    assert dash.charts["cpu"].points == 2 and len(dash.charts["cpu"].figure.marks) == 2
    assert dash.charts["network"].points == 2
    assert dash.charts["latency"].points == 2  # p99 missing: only p50 drawn
    p50, p99 = dash.charts["latency"].figure.marks
    assert len(p50.y) == 2 and len(p99.y) == 0
    for key in ("gpu_util", "gpu_memory", "gpu_temp"):
        assert "no GPU" in dash.charts[key].note.value
    assert "line 2" in dash.log.value
    # The next poll asks only for newer samples.
    dash.refresh()
    assert [c for c in client.calls if c[0] == "metrics"][-1][1] == dash.dep_window.t[-3]
    assert "Requests" in dash.info.value and "7" in dash.info.value
    dash.close()
    assert not dash.poller.running


def test_dashboard_draws_gpus_and_degrades_without_metrics() -> None:
    dash = Dashboard("smol", FakeClient(gpus=True), autostart=False)
    dash.refresh()
    assert dash.charts["gpu_util"].points == 2 and dash.charts["gpu_util"].note.layout.display == "none"
    no_metrics = Dashboard("smol", FakeClient(metrics=False), autostart=False)
    no_metrics.refresh()
    assert "deployment metrics unavailable" in no_metrics.metrics_note.value
    assert no_metrics.charts["network"].points == 2  # host metrics still drawn
    assert "no GPU" in no_metrics.charts["gpu_temp"].note.value  # from the server's status
    assert "active" in no_metrics.status.value


def test_failure_reason_is_one_line_first_raw_lines_behind_a_toggle() -> None:
    reason = ("the engine exited with code 1 while loading:\nllama_model_loader: loaded meta data\n"
              "gguf_init_from_file_impl: failed to read magic\nllama_model_load: error loading model: bad file\n"
              "main: exiting due to model loading error")
    summary, details = failure_summary.reason_parts(reason)
    assert summary == "the engine exited with code 1 while loading: gguf_init_from_file_impl: failed to read magic"
    python = "the engine exited with code 1 while loading:\nTraceback (most recent call last):\n  File x\nOSError: no such model"
    assert failure_summary.reason_parts(python)[0] == "the engine exited with code 1 while loading: OSError: no such model"
    assert details[0] == "llama_model_loader: loaded meta data" and len(details) == 4
    assert failure_summary.reason_parts("stopped by the user") == ("stopped by the user", [])
    assert failure_summary.reason_parts(None) == (None, [])
    llama = "the engine exited with code 1 while loading:\n0.00.011.456 E gguf_init_from_reader: failed to read header"
    assert failure_summary.reason_parts(llama)[0] == (
        "the engine exited with code 1 while loading: gguf_init_from_reader: failed to read header")
    failed = record(status="failed", status_reason=reason, status_summary=summary, status_details=details)
    dash = Dashboard("smol", FakeClient([failed]), autostart=False)
    head, _, toggle = dash.reason.value.partition("<details")
    assert summary in head and "loaded meta data" not in head
    assert "Engine output (4 lines)" in toggle and "loaded meta data" in toggle


def test_dashboard_failed_status_shows_reason() -> None:
    client = FakeClient([record(status="failed", status_reason="exit code 1: bad model file")])
    dash = Dashboard("smol", client, autostart=False)
    assert "failed" in dash.status.value and "bad model file" in dash.reason.value
    assert dash.stop_button.disabled and not dash.relaunch_button.disabled


def test_dashboard_shows_the_loading_phase_and_the_last_load_times() -> None:
    progress = {"phase": "downloading", "percent": 40.0, "phase_elapsed_s": 3.0, "elapsed_s": 4.0,
                "bytes_done": 40 * 1024**2, "bytes_total": 100 * 1024**2, "rate_bytes_per_s": None, "phases": []}
    client = FakeClient([record(status="loading", progress=progress)])
    dash = Dashboard("smol", client, autostart=False)
    assert "<progress max='100' value='40'" in dash.status.value
    assert "downloading   40%  40 MiB of 100 MiB" in dash.status.value
    served = record(status_history=[{"status": "active", "at": NOW, "reason": None, "phases": [
        {"phase": "starting engine", "started_at": NOW - 2, "elapsed_s": 0.5},
        {"phase": "loading weights", "started_at": NOW - 1.5, "elapsed_s": 1.25}]}])
    dash = Dashboard("smol", FakeClient([served]), autostart=False)
    assert "<progress" not in dash.status.value
    assert "starting engine 0.5 s, loading weights 1.2 s" in dash.info.value


def test_dashboard_key_is_masked_revealed_and_generated_once() -> None:
    client = FakeClient()
    dash = Dashboard("smol", client, autostart=False)
    assert dash.key_text.value == ""
    dash.generate.click()
    assert dash.api_key == "md-secretsecretsecret"
    assert "secret" not in dash.key_text.value and "•" in dash.key_text.value
    assert "md-secretsecretsecret" not in dash.command.value
    dash.reveal.value = True
    assert dash.key_text.value == "md-secretsecretsecret"
    assert "Bearer md-secretsecretsecret" in dash.command.value
    assert "modeldeploy-copy" in dash.copy.value
    created = [c for c in client.calls if c[0] == "create_token"]
    assert created == [("create_token", {"deployment": "id-smol", "name": created[0][1]["name"]})]


def _dep(kind: str = "llamacpp", **config: Any) -> Any:
    """Enough of a `Deployment` for the record builders."""
    from types import SimpleNamespace

    base = {"kind": kind, "name": "smol"}
    if kind == "llamacpp":
        base["model"] = "/m/smol.gguf"
    else:
        base["models"] = [{"served_name": "mini", "model": "/m/mini"}]
    parsed = parse_config({**base, **config})
    from jupyter_modeldeploy.engines import get_engine

    tasks = get_engine(kind).model_tasks(parsed)  # what the engine says each model does
    return SimpleNamespace(kind=kind, name="smol", config=parsed, models=list(tasks), model_tasks=tasks)


def test_one_test_command_builder_with_the_key_in_hand() -> None:
    api = "http://127.0.0.1:8888/modeldeploy/endpoints/r-1/v1"
    chat = server_test_command.test_request(_dep(), api, prompt="it's")
    assert chat["url"] == f"{api}/chat/completions" and chat["body"]["messages"][0]["content"] == "it's"
    # Without a key: reads $MODELDEPLOY_API_KEY, and the answer says what to export.
    missing = server_test_command.test_command_answer(_dep(), api, prompt="it's")
    assert missing["key_source"] == "missing" and "$MODELDEPLOY_API_KEY" in missing["command"]
    assert "it'\"'\"'s" in missing["command"] and missing["export"].startswith("export MODELDEPLOY_API_KEY=")
    # A key in hand: the command carries it (works as pasted), no placeholder.
    given = server_test_command.test_command_answer(_dep(), api, key="md-abc")
    assert given["key_source"] == "given" and "Bearer md-abc" in given["command"] and "$" not in given["command"]
    assert server_test_command.test_command_answer(_dep(api_key=""), api)["key_source"] == "missing"  # an empty form field
    fixed = server_test_command.test_command_answer(_dep(api_key="fixed-key-123"), api)
    assert fixed["key_source"] == "fixed" and "Bearer fixed-key-123" in fixed["command"]
    public = server_test_command.test_command_answer(_dep(public=True), api)
    assert public["key_source"] == "public" and "Authorization" not in public["command"]
    emb = server_test_command.test_request(_dep("embedding"), api, prompt="text")
    assert emb["url"] == f"{api}/embeddings" and emb["body"] == {"model": "mini", "input": ["text"]}
    in_embedding_mode = server_test_command.test_request(_dep(embedding=True), api)
    assert in_embedding_mode["url"] == f"{api}/embeddings" and in_embedding_mode["body"]["model"] == "smol"
    rerank = server_test_command.test_request(
        _dep("embedding", models=[{"served_name": "ce", "model": "/m/ce", "task": "rerank"}]), api, prompt="q")
    assert rerank["url"] == f"{api}/rerank" and rerank["body"]["query"] == "q" and rerank["body"]["model"] == "ce"


def test_answers_are_summarised() -> None:
    chat = record()
    emb = record(kind="embedding")
    emb["kind"] = "embedding"
    assert summarize_answer(chat, {"choices": [{"message": {"content": "Hello!"}}]}) == "Hello!"
    assert "3 dimensions" in summarize_answer(emb, {"object": "list", "data": [{"embedding": [0.1, 0.2, 0.3]}]})


def test_dashboard_command_comes_from_the_server_and_offers_a_key() -> None:
    client = FakeClient()
    dash = Dashboard("smol", client, autostart=False)
    assert "$MODELDEPLOY_API_KEY" in dash.command.value
    assert "No key in hand" in dash.command_note.value and "export MODELDEPLOY_API_KEY" in dash.command_note.value
    assert dash.command_key.layout.display == ""
    dash.command_key.click()  # generate a key in place
    assert dash.api_key == "md-secretsecretsecret"
    assert "$MODELDEPLOY_API_KEY" not in dash.command.value and "•" in dash.command.value
    assert "Bearer md-secretsecretsecret" in dash.copy_command.value  # what Copy puts on the clipboard
    assert dash.command_key.layout.display == "none" and "works as pasted" in dash.command_note.value
    asked = len([c for c in client.calls if c[0] == "test_command"])
    dash.refresh()
    assert len([c for c in client.calls if c[0] == "test_command"]) == asked  # asked again only on changes


def test_endpoints_table_rows_and_actions() -> None:
    client = FakeClient([record("a"), record("b", "failed", status_reason="exit code 2")])
    opened = []
    table = EndpointsTable(client, on_select=opened.append, autostart=False)
    assert len(table.grid.children) == 9 * 3
    row = table.rows["id-a"]
    assert "active" in row.status.value and row.requests.value == "7" and "<svg" in row.timeline.value
    assert "exit code 2" in table.rows["id-b"].status.value and table.rows["id-b"].stop.disabled
    grid_children = table.grid.children
    table.refresh()
    assert table.grid.children == grid_children  # updated in place, not rebuilt
    row.open.click()
    assert opened == ["id-a"]
    row.export.click()
    assert "data:application/json;base64," in table.message.value
    row.clone.click()
    assert table.clone_name.value == "a-copy"
    table.clone_go.click()
    table.refresh()
    assert "id-a-copy" in table.rows and len(table.grid.children) == 9 * 4
    row.stop.click()
    assert client.records["id-a"]["status"] == "stopped"
    assert table.find("a") == "id-a"
    table.close()


def test_dashboard_app_selects_from_query_and_closes_pollers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUERY_STRING", "deployment=smol&token=abc")
    assert query_params() == {"deployment": "smol", "token": "abc"}
    app = DashboardApp(FakeClient(), deployment=query_params()["deployment"])
    assert app.dashboard is not None and app.dashboard.record["id"] == "id-smol"
    first = app.dashboard
    app.table.rows["id-smol"].open.click()
    assert not first.poller.running and app.dashboard is not first
    app.tabs.selected_index = 1
    assert app.launch_box.children
    app.close()
    assert not app.table.poller.running and not app.dashboard.poller.running


def test_launch_form_launches_and_shows_field_errors(tmp_path: Any) -> None:
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    client = FakeClient()
    launched = []
    form = LaunchForm("llamacpp", client, on_launched=launched.append)
    form.form.fields["name"].value = "bad name"
    form.form.fields["top_p"].value = 3.0
    assert form.launch() is None
    assert "use only letters" in form.form.fields["name"].error.value and "^" not in form.form.fields["name"].error.value
    assert "less than or equal" in form.form.fields["top_p"].error.value
    assert "model" in form.form.fields["model"].error.value or form.form.fields["model"].error.value
    form.form.fields["name"].value = "good"
    form.form.fields["top_p"].value = 0.5
    form.form.fields["model"].value = str(gguf)
    rec = form.launch()
    assert rec is not None and launched == [rec] and form.form.fields["name"].error.value == ""
    assert client.launched[-1]["top_p"] == 0.5


def test_launch_form_shows_the_fit_live_and_forces_only_when_asked(tmp_path: Any, smollm2_gguf: Any) -> None:
    client = FakeClient()
    client.free_host_bytes = 1024**3
    form = LaunchForm("llamacpp", client)
    form.form.fields["name"].value = "fitting"
    form.form.fields["model"].value = str(smollm2_gguf)
    form.form.fields["ctx_size"].value = 2048
    assert form.last_fit is not None and form.last_fit["fits"] is True and "fits: needs" in form.fit.value
    assert form.force.layout.display == "none"
    form.form.fields["ctx_size"].value = 1 << 20  # about 22 GiB of KV cache
    assert form.last_fit["fits"] is False and "does not fit: host RAM: needs" in form.fit.value
    assert form.force.layout.display == ""
    assert form.launch() is None and client.launched == [] and "does not fit" in form.result.value
    form.force.value = True
    assert form.launch() is not None and len(client.launched) == 1


def test_launch_defaults_pick_a_kind_that_can_run_here() -> None:
    from types import SimpleNamespace

    def dep(kind: str, at: float) -> Any:
        return SimpleNamespace(kind=kind, name=f"{kind}-{at:g}", created_at=at)

    only_llama = {"llamacpp": {"available": True}, "llm": {"available": False}, "embedding": {"available": True}}
    fresh = launch_defaults.launch_defaults([], only_llama, "/pkg/smol.gguf")
    assert fresh["kind"] == "llamacpp" and fresh["values"] == {"model": "/pkg/smol.gguf"}
    assert "vLLM is not installed" in fresh["why"]
    last = launch_defaults.launch_defaults([dep("llamacpp", 1), dep("embedding", 2)], only_llama, None)
    assert last["kind"] == "embedding" and last["values"] == {}
    # The last kind is not offered when its engine went missing.
    assert launch_defaults.launch_defaults([dep("llm", 3)], only_llama, "/pkg/smol.gguf")["kind"] == "llamacpp"
    every = {k: {"available": True} for k in ("llamacpp", "llm", "embedding")}
    assert launch_defaults.launch_defaults([dep("llm", 3)], every, None)["kind"] == "llm"


def test_launch_form_opens_on_the_server_defaults() -> None:
    form = LaunchForm(None, FakeClient())
    assert form.kind_pick.value == "llamacpp" and form.form.fields["model"].value == "/bundled/smol.gguf"
    assert dict(form.kind_pick.options)["llama.cpp (GGUF models)"] == "llamacpp"


def test_launch_form_stops_a_launch_that_cannot_start(tmp_path: Any) -> None:
    client = FakeClient()
    launched = []
    form = LaunchForm("llamacpp", client, on_launched=launched.append)
    form.form.fields["name"].value = "smol2"
    form.form.fields["model"].value = str(tmp_path / "missing.gguf")
    assert form.launch() is None and client.launched == [] and launched == []
    assert "no file" in form.form.fields["model"].error.value and "cannot start" in form.result.value
    assert form.form.fields["kind"].container.layout.display == "none"  # the kind has its selector
    not_gguf = tmp_path / "readme.gguf"
    not_gguf.write_text("hello")
    form.form.fields["model"].value = str(not_gguf)
    assert form.launch() is None and client.launched == []
    assert "not a GGUF file" in form.form.fields["model"].error.value
    assert "Launched" not in form.result.value


def test_launch_form_import_export_and_clone() -> None:
    client = FakeClient([record("smol")])
    form = LaunchForm("llm", client)
    exported = {**client.records["id-smol"]["config"], "temperature": 0.3}
    content = memoryview(json.dumps(exported).encode())
    form.upload.value = ({"name": "smol.json", "type": "application/json", "size": len(content),
                          "content": content, "last_modified": datetime.now(timezone.utc)},)
    assert form.kind_pick.value == "llamacpp"
    assert form.form.fields["temperature"].value == 0.3
    data = form.export()
    assert data == exported and "data:application/json;base64," in form.export_link.value
    assert "api_key" not in data
    form.form.fields["api_key"].value = "sk-x"
    assert "api_key" not in form.export() and form.value["api_key"] == "sk-x"
    form.clone_pick.value = "id-smol"
    assert form.form.fields["name"].value == "smol-copy" and form.clone_pick.value == ""
    form.import_config('{"kind": "llamacpp", "name": "x", "model": "m", "bogus": 1}')
    assert "bogus" in form.form.message.value


def test_helpers() -> None:
    assert format_duration(5) == "5 s" and format_duration(125) == "2 min 5 s" and format_duration(None) == "—"
    assert format_duration(7300) == "2 h 1 min"
    assert format_number(63800.2) == "63,800" and format_number(0.98642) == "0.986"
    assert "download='a.json'" in download_link({"a": 1}, "a.json")
    svg = status_timeline([{"status": "loading", "at": 0}, {"status": "active", "at": 10}], now=20)
    assert svg.count("<rect") == 2 and "fill:var(--jp-success-color1" in svg


def test_dashboard_stops_polling_when_closed() -> None:
    client = FakeClient()
    dash = Dashboard("smol", client, interval_s=0.05)
    deadline = time.monotonic() + 5
    while dash.poller.ticks < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert dash.poller.running
    dash.widget.close()  # closing the widget (as the page does) stops the poller
    time.sleep(0.2)
    n = len(client.calls)
    time.sleep(0.3)
    assert not dash.poller.running and len(client.calls) == n
    assert threading.active_count() < 50


def test_one_chart_with_one_call_and_the_dashboard_offers_its_snippet() -> None:
    from jupyter_modeldeploy.widgets import chart

    client = FakeClient()
    live = chart("smol", "tokens_per_s", client, autostart=False)
    live.refresh()
    assert live.chart.points == 2 and "Completion tokens per second" in live.chart.header.value
    assert [c[0] for c in client.calls] == ["metrics"]  # only the deployment's series are fetched
    cpu = chart("smol", "cpu", client, autostart=False)
    cpu.refresh()
    assert len(cpu.chart.figure.marks) == 2 and cpu.chart.points == 2  # engine and host lines
    gpu = chart("smol", "gpu", FakeClient(gpus=True), autostart=False)
    gpu.refresh()
    assert gpu.spec.key == "gpu_util" and gpu.chart.points == 2
    with pytest.raises(ValueError, match="unknown chart 'tokens_per_minute'; choose one of: requests, latency"):
        chart("smol", "tokens_per_minute", client, autostart=False)
    dash = Dashboard("smol", client, autostart=False)
    header = dash.charts["tokens_per_s"].header.value
    assert "</> code" in html.unescape(header)
    assert "chart(&#x27;smol&#x27;, &#x27;tokens_per_s&#x27;)" in header  # the code, HTML-escaped
    # The snippet is the one call, with the import it needs.
    assert dash.charts["tokens_per_s"].snippet == (
        "from jupyter_modeldeploy.widgets import chart\nchart('smol', 'tokens_per_s')")
    live.close()
    assert not live.poller.running


def test_status_colours_are_the_lab_panels() -> None:
    """Widgets (notebook, Voilà) and the Lab panel colour each status with the same theme variable."""
    import re
    from pathlib import Path

    from jupyter_modeldeploy.widgets.common import STATUS_VARS, status_badge

    css = (Path(__file__).resolve().parents[2] / "labextension" / "style" / "base.css").read_text()
    for status, (variable, _fallback) in STATUS_VARS.items():
        rule = re.search(rf"\.jp-ModelDeploy-status\.jp-mod-{status} \.jp-ModelDeploy-statusDot \{{([^}}]*)\}}", css)
        assert rule, f"no panel style for {status}"
        colours = re.findall(r"var\((--jp-[\w-]+)\)", rule.group(1))
        assert colours[-1] == variable, (status, colours)
        assert f"var({variable}" in status_badge(status)


def test_cli_status_prints_the_servers_test_command(capsys: pytest.CaptureFixture[str]) -> None:
    from jupyter_modeldeploy.cli import build_parser, cmd_status

    client = FakeClient()
    cmd_status(client, build_parser().parse_args(["status", "smol"]))
    out = capsys.readouterr().out
    assert "test: curl -s" in out and "$MODELDEPLOY_API_KEY" in out
    assert "export MODELDEPLOY_API_KEY=" in out and "--new-key" in out  # what to do without a key
    cmd_status(client, build_parser().parse_args(["status", "smol", "--new-key"]))
    out = capsys.readouterr().out
    assert "new key t-1 (shown once): md-secretsecretsecret" in out
    assert "Bearer md-secretsecretsecret" in out and "no key in hand" not in out


def test_kind_labels_are_the_lab_forms() -> None:
    """The notebook form and the Lab form name the kinds alike."""
    import re
    from pathlib import Path

    from jupyter_modeldeploy.widgets.launch_form import KIND_LABELS

    source = (Path(__file__).resolve().parents[2] / "labextension" / "src" / "form.tsx").read_text()
    block = re.search(r"const KIND_LABELS[^{]*\{([^}]*)\}", source)
    assert block, "no KIND_LABELS in form.tsx"
    assert dict(re.findall(r"(\w+): '([^']*)'", block.group(1))) == KIND_LABELS


def test_dashboard_shows_usage_per_key_in_a_table_and_a_chart() -> None:
    client = FakeClient()
    dash = Dashboard("smol", client, autostart=False)
    dash.refresh()
    asked = [c[1] for c in client.calls if c[0] == "usage"][-1]
    assert asked["deployment"] == dash.ref and asked["since"] > 0
    table = dash.key_usage.table.value
    assert "alice (t-a)" in table and "api-key" in table and table.index("alice") < table.index("api-key")
    assert "<td style='padding:2px 12px 2px 0;text-align:right'>3</td>" in table  # alice's requests summed
    assert list(dash.key_usage.bars.x) == ["alice (t-a)", "api-key"]
    assert [list(y) for y in dash.key_usage.bars.y] == [[6, 0], [12, 0]]
    dash.close()


def test_dashboard_lists_the_newest_requests() -> None:
    client = FakeClient()
    dash = Dashboard("smol", client, autostart=False)
    dash.refresh()
    assert [c[1]["limit"] for c in client.calls if c[0] == "requests"][-1] == 20
    table = dash.request_log.widget.value
    assert table.index("alice") < table.index(">none<") and ">401<" in table and ">12.3<" in table
    assert ">#2<" in table and "%deploy replay" in table  # the captured one, and how to replay it
    dash.close()
