"""`/api/modeldeploy/metrics` speaks Prometheus: the exposition content type, OpenMetrics when asked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.support.jupyter import JupyterProcess

pytestmark = pytest.mark.integration

# What Prometheus 3 sends by default (scrape_protocols: OpenMetrics first, then text).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8,application/openmetrics-text;version=0.0.1;q=0.8,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.6,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProcess]:
    proc = JupyterProcess(tmp_path_factory.mktemp("metrics")).start()
    yield proc
    proc.stop()


def test_plain_scrape_is_the_text_exposition_format(server: JupyterProcess) -> None:
    response = server.api("GET", "metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    names = {f.name for f in parse_text(response.text)}
    assert "modeldeploy_requests" in names


def test_openmetrics_when_the_accept_header_asks(server: JupyterProcess) -> None:
    response = server.api("GET", "metrics", headers={"Accept": PROMETHEUS_ACCEPT})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert response.text.endswith("# EOF\n")
    assert "modeldeploy_requests" in {f.name for f in parse_openmetrics(response.text)}


def test_a_bearer_jupyter_token_is_accepted(server: JupyterProcess) -> None:
    """The scrape config in docs/metrics.md sends the token as `Authorization: Bearer`."""
    import httpx

    response = httpx.get(f"{server.url}api/modeldeploy/metrics", headers={"Authorization": f"Bearer {server.token}"})
    assert response.status_code == 200
    assert httpx.get(f"{server.url}api/modeldeploy/metrics").status_code in (401, 403)
