"""The dashboard's benchmark section: nothing runs unasked; a run is shown, saved, overlaid with others, exported."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest

from jupyter_modeldeploy.benchmark import results
from jupyter_modeldeploy.benchmark.sweep import Sample, summarize
from jupyter_modeldeploy.widgets import benchmark as panel_module
from jupyter_modeldeploy.widgets.benchmark import BenchmarkPanel


def saved(rid: str, deployment: str, started: float, tokens: int) -> dict[str, Any]:
    steps = [summarize(c, [Sample(0.0, 1.0, [0.1 * k for k in range(1, tokens + 1)], tokens * c)]).to_json()
             for c in (1, 2, 4)]
    return {"id": rid, "deployment": deployment, "deployment_id": f"id-{deployment}", "kind": "llamacpp",
            "model": "smol", "started_at": started, "config": {"name": deployment},
            "settings": {"prompt": "p", "max_tokens": tokens, "max_concurrency": 4, "requests_per_client": 1},
            "steps": steps}


def test_nothing_runs_unasked_and_saved_results_overlay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    monkeypatch.setattr(panel_module, "benchmark", lambda *a, **k: ran.append("run"))
    results.save(saved("b-1", "smol", 1.0, 4), tmp_path)
    results.save(saved("b-2", "other", 2.0, 8), tmp_path)
    panel = BenchmarkPanel("smol", client=object(), folder=tmp_path)
    assert ran == []  # building the panel runs nothing
    assert panel.compare.value == ("b-1",)  # this deployment's newest, drawn
    assert len(panel.figure.marks) == 1 and list(panel.figure.marks[0].x) == [1, 2, 4]
    assert list(panel.figure.marks[0].y) == [4.0, 8.0, 16.0]  # tokens/s grows with the clients
    assert list(panel.figure.axes[0].tick_values) == [1, 2, 4]
    panel.compare.value = ("b-1", "b-2")  # compared with another deployment: two lines on the same axes
    assert len(panel.figure.marks) == 2
    panel.metric.value = "ttft_ms_p50"
    assert panel.figure.axes[1].label == "TTFT p50 (ms)" and list(panel.figure.marks[0].y)[0] == pytest.approx(100.0)
    csv_link = re.search(r"data:text/csv;base64,([A-Za-z0-9+/=]+)", panel.exports.value)
    assert csv_link is not None
    rows = base64.b64decode(csv_link.group(1)).decode().strip().splitlines()
    assert len(rows) == 1 + 6 and "b-2,other" in rows[-1]


def test_a_run_is_shown_saved_and_selected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(client: Any, ref: str, settings: Any, *, on_step: Any, save_to: Path) -> dict[str, Any]:
        assert ref == "smol" and settings.max_concurrency == 2 and settings.max_tokens == 8
        result = saved("b-9", "smol", 9.0, 8)
        for step in result["steps"]:
            on_step(summarize(step["concurrency"], [Sample(0.0, 1.0, [0.5], 1)]))
        result["file"] = str(results.save(result, save_to))
        return result

    monkeypatch.setattr(panel_module, "benchmark", fake)
    panel = BenchmarkPanel("smol", client=object(), folder=tmp_path)
    panel.max_concurrency.value, panel.max_tokens.value = 2, 8
    result = panel.run()
    assert result is not None and panel.compare.value == ("b-9",)
    assert "  4 clients  TTFT p50 500.0 ms" in panel.status.value and "saved b-9" in panel.status.value
    assert not panel.run_button.disabled and len(panel.figure.marks) == 1


def test_a_run_that_cannot_start_says_why(tmp_path: Path) -> None:
    class Client:
        def get(self, ref: str) -> dict[str, Any]:
            return {"name": ref, "status": "stopped", "serving": False}

    panel = BenchmarkPanel("smol", client=Client(), folder=tmp_path)
    assert panel.run() is None and "is stopped" in panel.status.value
