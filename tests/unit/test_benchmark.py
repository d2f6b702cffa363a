"""The benchmark's pure parts: the steps within limits, each step's figures, saving, reloading, exports."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from jupyter_modeldeploy.benchmark import results
from jupyter_modeldeploy.benchmark.runner import BenchmarkError, Settings, chat_model
from jupyter_modeldeploy.benchmark.sweep import Sample, concurrency_limit, steps, summarize
from jupyter_modeldeploy.formats import describe_step


def test_steps_double_up_to_the_top_and_stay_within_the_limit() -> None:
    assert steps(8) == [1, 2, 4, 8]
    assert steps(6) == [1, 2, 4, 6]
    assert steps(1) == [1]
    assert steps(16, limit=5) == [1, 2, 4, 5]
    assert concurrency_limit({"max_concurrent_requests": 5}) == 5 and concurrency_limit({}) is None


def test_a_step_has_ttft_inter_token_latency_and_throughput() -> None:
    samples = [
        Sample(started=0.0, ended=1.0, token_times=[0.1, 0.2, 0.3, 0.4], completion_tokens=4),
        Sample(started=0.0, ended=2.0, token_times=[0.3, 0.5, 0.7], completion_tokens=3),
        Sample(started=0.5, ended=0.6, error="HTTP 429"),
    ]
    step = summarize(2, samples)
    assert (step.concurrency, step.requests, step.errors) == (2, 3, 1)
    assert step.ttft_ms_p50 == pytest.approx(200.0) and step.ttft_ms_p95 == pytest.approx(300.0)
    assert step.itl_ms_p50 == pytest.approx(100.0)  # gaps 100, 100, 100, 200, 200
    assert step.tokens_per_s == pytest.approx(3.5) and step.requests_per_s == pytest.approx(1.0)
    line = describe_step(step.to_json())
    assert line.startswith("  2 clients  TTFT p50 200.0 ms") and "errors 1/3" in line


def test_settings_and_deployments_that_cannot_be_benchmarked_say_why() -> None:
    with pytest.raises(BenchmarkError, match="max_concurrency"):
        Settings(max_concurrency=0)
    with pytest.raises(BenchmarkError, match="is stopped"):
        chat_model({"name": "x", "status": "stopped", "serving": False})
    with pytest.raises(BenchmarkError, match="no chat model"):
        chat_model({"name": "e", "status": "active", "serving": True, "models": [{"name": "m", "task": "embed"}]})
    assert chat_model({"serving": True, "models": [{"name": "m", "task": "chat"}]}) == "m"


def result(rid: str, deployment: str, started: float) -> dict:
    return {"id": rid, "deployment": deployment, "kind": "llamacpp", "model": "smol", "started_at": started,
            "config": {"name": deployment, "api_key": "sk-secret", "hf_token": "hf_secret", "ctx_size": 2048},
            "settings": {"prompt": "hello", "max_tokens": 8, "max_concurrency": 2, "requests_per_client": 1},
            "steps": [summarize(c, [Sample(0.0, 1.0, [0.5], 1)]).to_json() for c in (1, 2)]}


def test_results_are_saved_without_secrets_reloaded_and_exported(tmp_path: Path) -> None:
    results.save(result("b-2", "b", 2.0), tmp_path)
    path = results.save(result("b-1", "a", 1.0), tmp_path)
    (tmp_path / "b-bad.json").write_text("{not json")
    assert "secret" not in path.read_text()
    loaded = results.load_all(tmp_path)
    assert [r["id"] for r in loaded] == ["b-1", "b-2"]  # oldest first; the unreadable file left out
    assert loaded[0]["config"]["ctx_size"] == 2048
    rows = list(csv.DictReader(io.StringIO(results.to_csv(loaded))))
    assert [(r["deployment"], r["concurrency"]) for r in rows] == [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2")]
    assert rows[0]["tokens_per_s"] == "1.0" and rows[0]["max_tokens"] == "8"
    exported = json.loads(results.to_json(loaded))
    assert len(exported) == 2 and "secret" not in json.dumps(exported)
