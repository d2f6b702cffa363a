"""Fixtures of the gateway's wire tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway_harness import GatewayThread


@pytest.fixture(params=["loop", "worker"])
def gw(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[GatewayThread]:
    """The gateway in front of a wire engine, on a loop of its own thread (plain sockets talk to it):
    on the server's own loop (as while no worker serves), and handed to the gateway worker, as the extension does."""
    thread = GatewayThread(tmp_path, upstream_timeout_s=1.5, worker=request.param == "worker")
    yield thread
    thread.close()
