"""The relay protocol: every message survives the channel's JSON as it was; other versions and shapes are refused."""

from __future__ import annotations

import json

import pytest

from jupyter_modeldeploy.engines.base import EngineAddress
from jupyter_modeldeploy.gateway.relay.protocol import (
    PROTOCOL_VERSION,
    Ack,
    Ended,
    Job,
    Message,
    Outcome,
    ProtocolError,
    decode,
    encode,
)

MESSAGES: list[Message] = [
    Job(7, "POST", "/v1/chat/completions?x=1", EngineAddress(socket_path="state/engine.sock"),
        (("Content-Type", "application/json"), ("Authorization", "Bearer k")), 600.0, keep_alive=False,
        injected=True, cors=(("Access-Control-Allow-Origin", "https://a.example"),)),
    Job(8, "GET", "/v1/models", EngineAddress(host="10.0.0.2", port=8000), (), 5.0),
    Ended(7, 200, 0.012, True, (12, 34)),
    Ended(9, 204),
    Ack(7),
    Outcome(7, "done", 200, 0.01, True, (1, 2), reusable=True),
    Outcome(8, "unreachable", message="connection refused"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_a_message_round_trips_through_the_frame_header(message: Message) -> None:
    header = json.loads(json.dumps(encode(message)))
    assert header["v"] == PROTOCOL_VERSION
    assert decode(header) == message


@pytest.mark.parametrize("header", [
    {"v": PROTOCOL_VERSION + 1, "kind": "ack", "id": 1},
    {"kind": "ack", "id": 1},
    {"v": PROTOCOL_VERSION, "kind": "lease", "id": 1},
    {"v": PROTOCOL_VERSION, "kind": "ack"},
    {"v": PROTOCOL_VERSION, "kind": "ended", "id": 1, "status": 200, "usage": [1]},
    {"v": PROTOCOL_VERSION, "kind": "job", "id": 1, "method": "GET"},
    {"v": PROTOCOL_VERSION, "kind": "outcome", "id": 1, "outcome": "done", "surprise": True},
])
def test_a_frame_of_another_version_or_shape_is_refused(header: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        decode(header)
