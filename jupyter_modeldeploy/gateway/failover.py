"""What the gateway does when a replica fails a request: send it to another, or end a cut stream cleanly.

Both relays (the handler of `proxy.py`, and any data path that replaces it) ask the same two
questions, so the policy lives here, apart from how bytes are moved:

- `resend_elsewhere`: may a request that failed with this error go to another replica? Only when
  no byte of its answer came back, so none can have reached the client: the engine could not be
  connected to (`UpstreamUnreachable`), or it accepted the connection and then closed or reset it
  before the answer's head (`UpstreamNoAnswer`: a replica or its node dying). The replica leaves
  the rotation in both cases. A timeout is not sent again: the engine may still be working on it.
- `cut_stream_event`: the last bytes of an event stream an engine broke off after it began: an
  error event in the route's dialect, after which the stream ends as a stream should (the last
  chunk), so the client's SDK raises an error that says what happened instead of a protocol error.
"""

from __future__ import annotations

import json

from .refusals import Refusal, refusal_document
from .upstream import UpstreamError, UpstreamNoAnswer, UpstreamUnreachable


def resend_elsewhere(exc: UpstreamError) -> bool:
    """Whether the request may go to another replica: nothing of the answer came back."""
    return isinstance(exc, (UpstreamUnreachable, UpstreamNoAnswer))


def cut_stream_event(reason: str, dialect: str = "openai") -> bytes:
    """An SSE error event telling the client its stream was cut (`reason`), in the route's dialect."""
    document = refusal_document(Refusal(502, f"the engine broke off the stream: {reason}", "upstream_error"),
                                dialect)  # type: ignore[arg-type]
    data = b"data: " + json.dumps(document).encode() + b"\n\n"
    return (b"event: error\n" + data) if dialect == "anthropic" else data
