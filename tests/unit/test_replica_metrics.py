"""A Ray deployment's charts: per-replica series and the deployment's totals."""

from __future__ import annotations

from jupyter_modeldeploy.config import parse_config
from jupyter_modeldeploy.engines import EngineAddress
from jupyter_modeldeploy.metrics.hub import combine_replicas, replica_rows
from jupyter_modeldeploy.metrics.series import SeriesTable
from jupyter_modeldeploy.supervisor import Deployment
from jupyter_modeldeploy.supervisor.logbuffer import LogBuffer
from jupyter_modeldeploy.supervisor.replicas import Replica, set_serving


def test_counts_add_up_and_ratios_average() -> None:
    combined = combine_replicas([
        {"llamacpp:requests_processing": 2, "llamacpp:kv_cache_usage_ratio": 0.2, "vllm:kv_cache_usage_perc": 10},
        {"llamacpp:requests_processing": 1, "llamacpp:kv_cache_usage_ratio": 0.6},
    ])
    assert combined == {"llamacpp:requests_processing": 3, "llamacpp:kv_cache_usage_ratio": 0.4,
                        "vllm:kv_cache_usage_perc": 10}


def test_replica_rows_name_each_replica_and_sum_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = parse_config({"kind": "llamacpp", "name": "r", "model": "m.gguf",
                           "placement": {"target": "ray", "replicas": {"min": 2, "max": 2}}})
    dep = Deployment(id="d1", config=config, route="r", work_dir=tmp_path, log=LogBuffer(tmp_path / "log"))
    a = Replica(id="md-d1-aaaaaa", address=EngineAddress(port=1), stats={"cpu_percent": 50.0, "memory_bytes": 100.0})
    b = Replica(id="md-d1-bbbbbb", in_flight=2, stats={"cpu_percent": 25.0, "memory_bytes": 300.0})
    set_serving(a)
    dep.replicas = [a, b]
    row = replica_rows(dep)
    assert row["replica:aaaaaa:cpu_percent"] == 50.0 and row["replica:bbbbbb:in_flight"] == 2.0
    assert row["process_cpu_percent"] == 75.0 and row["process_rss_bytes"] == 400.0
    assert row["replicas_serving"] == 1.0


def test_a_gone_replica_column_leaves_once_its_values_left_the_window() -> None:
    table = SeriesTable(window=3)
    table.append(1, {"total": 1, "replica:a:cpu_percent": 5})
    for t in (2, 3):
        table.append(t, {"total": 1})
        assert "replica:a:cpu_percent" in table.columns
    table.append(4, {"total": 1})
    assert "replica:a:cpu_percent" not in table.columns and list(table.columns["total"]) == [1, 1, 1]
