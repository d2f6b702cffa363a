"""Fixtures of the gateway's wire tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway_harness import GatewayThread


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[GatewayThread]:
    """The gateway in front of a wire engine, on a loop of its own thread (plain sockets talk to it)."""
    thread = GatewayThread(tmp_path, upstream_timeout_s=1.5)
    yield thread
    thread.close()
