"""Metric building blocks: ring-buffer series, percentiles, interval rates, engine text parsing."""

from __future__ import annotations

from jupyter_modeldeploy.engines.base import LLAMACPP_METRICS, VLLM_METRICS
from jupyter_modeldeploy.metrics.hub import parse_engine_metrics
from jupyter_modeldeploy.metrics.requests import RequestStats, percentile
from jupyter_modeldeploy.metrics.series import SeriesTable


def test_series_table_is_bounded_and_filters_by_time() -> None:
    table = SeriesTable(window=3)
    for i in range(5):
        table.append(float(i), {"a": i * 10.0})
    table.append(5.0, {"a": 50.0, "b": 1.0})
    data = table.since(None)
    assert data["t"] == [3.0, 4.0, 5.0]
    assert data["series"]["a"] == [30.0, 40.0, 50.0]
    assert data["series"]["b"] == [None, None, 1.0]
    assert table.since(4.0)["t"] == [5.0]
    assert table.last("a") == 50.0


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(map(float, range(101))), 99) == 99.0


def test_request_stats_totals_and_interval() -> None:
    stats = RequestStats()
    stats.record("m", 200, 0.1, None, 5, 10)
    stats.record("m", 200, 0.3, 0.05, 5, 20)
    stats.record("n", 429, 0.001, None, 0, 0)
    assert stats.totals.requests == 3
    assert stats.totals.by_status == {"200": 2, "429": 1}
    assert stats.per_model["m"].completion_tokens == 30
    row = stats.take_interval(2.0)
    assert row["requests_per_s"] == 1.5 and row["tokens_per_s"] == 15.0
    assert row["first_token_p50_ms"] == 50.0
    assert stats.take_interval(2.0)["requests_per_s"] == 0.0


def test_engine_metrics_parsing() -> None:
    text = (
        "# HELP llamacpp:tokens_predicted_total x\n# TYPE llamacpp:tokens_predicted_total counter\n"
        "llamacpp:tokens_predicted_total 42\n"
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{model_name="a"} 2\nvllm:num_requests_running{model_name="b"} 1\n'
        "# TYPE other gauge\nother 5\n"
    )
    values = parse_engine_metrics(text, LLAMACPP_METRICS.names | VLLM_METRICS.names)
    assert values == {"llamacpp:tokens_predicted_total": 42.0, "vllm:num_requests_running": 3.0}
    assert parse_engine_metrics(text, VLLM_METRICS.names) == {"vllm:num_requests_running": 3.0}
