"""What one request through the gateway did: the record observers (the metrics hub) receive.

A plain dataclass with no handler code, so consumers import it without the tornado handler.
"""

from __future__ import annotations

from dataclasses import dataclass

from .usage import Usage

#: The model label of requests that named a model the deployment does not serve: metric
#: labels and per-model totals take served names only, so they stay bounded.
OTHER_MODEL = "other"
#: The key id of requests made with a deployment's fixed API key, and of requests made without a key.
FIXED_KEY_ID = "api-key"
NO_KEY_ID = "none"


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
    key_id: str = NO_KEY_ID  # a generated key's id, FIXED_KEY_ID or NO_KEY_ID; never the key
