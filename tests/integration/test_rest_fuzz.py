"""A fuzz of the REST API from its own OpenAPI document: no 5xx, every answer as documented.

Schemathesis generates requests for every operation in docs/openapi.yaml (valid and
invalid ones) and checks each answer: not a server error, a documented status code and
content type, a body that matches the documented schema. The server's engines point at
programs that do not exist, so a generated configuration that does validate fails at
once instead of starting a real engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.jupyter import JupyterProcess

pytestmark = pytest.mark.integration

SPEC = Path(__file__).parents[2] / "docs" / "openapi.yaml"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProcess]:
    home = tmp_path_factory.mktemp("fuzz")
    missing = home / "no-such-engine"
    proc = JupyterProcess(home, extra_args=[
        f"--ModelDeployApp.llamacpp_server={missing}", f"--ModelDeployApp.vllm_python={missing}",
        f"--ModelDeployApp.embedding_python={missing}", "--ModelDeployApp.llamacpp_engine=llama-server",
    ]).start()
    yield proc
    proc.stop()


schema = schemathesis.openapi.from_path(SPEC)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case: schemathesis.Case, fuzz_server: JupyterProcess) -> None:
    case.headers = {**(case.headers or {}), **fuzz_server.headers}  # the real token, not a generated one
    case.call_and_validate(base_url=fuzz_server.url.rstrip("/"), checks=CHECKS, timeout=30)
