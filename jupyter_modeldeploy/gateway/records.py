"""What the gateway reports about each request it proxied: plain data, no HTTP machinery.

Observers (the metrics hub) import this module, never the handler module `proxy.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .usage import Usage


@dataclass
class RequestRecord:
    """What one proxied request did, for the metrics."""

    deployment_id: str
    model: str | None
    status: int
    latency_s: float
    first_chunk_s: float | None = None
    usage: Usage | None = None
    streamed: bool = False
