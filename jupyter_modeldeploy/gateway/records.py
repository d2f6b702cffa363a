"""What one request through the gateway did: the record observers (the metrics hub) receive.

A plain dataclass with no handler code, so consumers import it without the tornado handler.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .usage import Usage

#: The model label of requests that named a model the deployment does not serve: metric
#: labels and per-model totals take served names only, so they stay bounded.
OTHER_MODEL = "other"
#: The key id of requests made with a deployment's fixed API key, and of requests made without a key.
FIXED_KEY_ID = "api-key"
NO_KEY_ID = "none"


CAPTURE_SLACK = 256


def model_label(models: list[str], model: str | None) -> str | None:
    """A metrics label: a served model's name, or `other` (labels stay bounded)."""
    if model is None:
        return models[0] if len(models) == 1 else None
    return model if model in models else OTHER_MODEL


@dataclass
class Capture:
    """The first bytes of a request's and its answer's bodies (secrets are redacted where they are stored)."""

    limit: int
    request: bytes = b""
    response: bytearray = field(default_factory=bytearray)
    secrets: tuple[str, ...] = ()  # values to redact: keys this request presented or the deployment holds

    def keep(self, chunk: bytes) -> None:
        """Keep the next bytes of the answer, up to the limit (and a little more, so a secret the limit
        cuts through is still recognised when it is redacted; the store cuts to the limit after that)."""
        room = self.limit + CAPTURE_SLACK - len(self.response)
        if room > 0:
            self.response += chunk[:room]


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
    method: str = ""
    path: str = ""  # the engine path it went to (the request log's route)
    capture: Capture | None = None  # the bodies, where the deployment captures them
    door: str = "jupyter"  # how it came: through the Jupyter server, or the gateway worker's `socket` or `port`
    replica: str | None = None  # the replica it was sent to (None: it reached none)
