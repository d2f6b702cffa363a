"""Endpoint traffic as the Jupyter server's activity (`server_ext/server_activity.py`)."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

from jupyter_modeldeploy.server_ext.server_activity import ACTIVITY_KEY, ServerActivity, endpoint_activity


def dep(in_flight: int, last: float) -> SimpleNamespace:
    return SimpleNamespace(in_flight=in_flight, last_activity_at=last)


def test_a_request_in_flight_is_activity_now_whatever_the_setting() -> None:
    for counts in (True, False):
        assert endpoint_activity([dep(0, 10.0), dep(1, 20.0)], requests_count=counts, now=99.0) == 99.0


def test_the_last_request_counts_only_where_requests_count() -> None:
    assert endpoint_activity([dep(0, 10.0), dep(0, 20.0)], requests_count=True, now=99.0) == 20.0
    assert endpoint_activity([dep(0, 10.0), dep(0, 20.0)], requests_count=False, now=99.0) is None
    assert endpoint_activity([], requests_count=True, now=99.0) is None


def test_the_entry_only_moves_forward() -> None:
    settings: dict = {}
    supervisor = SimpleNamespace(deployments={"a": dep(0, 1000.0)})
    activity = ServerActivity(settings, supervisor, lambda: None, requests_count=True, every_s=5)
    activity.check()
    assert settings["last_activity_times"][ACTIVITY_KEY] == datetime.fromtimestamp(1000.0, tz=timezone.utc)
    supervisor.deployments["a"].last_activity_at = 500.0  # an older time never moves it back
    activity.check()
    assert settings["last_activity_times"][ACTIVITY_KEY] == datetime.fromtimestamp(1000.0, tz=timezone.utc)
