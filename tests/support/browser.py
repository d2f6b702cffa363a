"""What the browser tests share: the system Chromium, its flags, and polling until a condition holds."""

from __future__ import annotations

import time
from typing import Any

CHROMIUM = "/usr/bin/chromium"
# Headless as root on a machine with a closed network: no sandbox, no GPU, no background traffic.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


def wait_until(condition: Any, timeout: float, message: str, poll: float = 0.5) -> Any:
    """Call `condition` until it returns something truthy; fail with `message` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s: {message}")
        time.sleep(poll)
