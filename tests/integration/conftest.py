"""Fixtures of the gateway's wire tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway_harness import GatewayThread


@pytest.fixture(params=["loop", "relay"])
def gw(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[GatewayThread]:
    """The gateway in front of a wire engine, on a loop of its own thread (plain sockets talk to it):
    streamed answers on the gateway's loop, and through the stream relay worker, as the extension does."""
    thread = GatewayThread(tmp_path, upstream_timeout_s=1.5, stream_relay=request.param == "relay")
    yield thread
    thread.close()
