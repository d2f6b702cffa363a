"""The gateway worker's protocol: every message survives its frame as it was; other versions and kinds are refused."""

from __future__ import annotations

import json
import pickle

import pytest

from jupyter_modeldeploy.config import parse_config
from jupyter_modeldeploy.engines import EngineAddress, LaunchPlan
from jupyter_modeldeploy.engines.routes import LLAMA_SERVER
from jupyter_modeldeploy.gateway.quotas import QuotaBook
from jupyter_modeldeploy.gateway.records import Capture, RequestRecord
from jupyter_modeldeploy.gateway.relay.protocol import (
    PROTOCOL_VERSION,
    Finished,
    Handoff,
    Message,
    ProtocolError,
    Ready,
    Started,
    State,
    Unreachable,
    Wake,
    Woken,
    decode,
    encode,
)
from jupyter_modeldeploy.gateway.tokens import Quotas, TokenInfo
from jupyter_modeldeploy.gateway.usage import Usage
from jupyter_modeldeploy.gateway.view import DeploymentView, KeyView
from jupyter_modeldeploy.supervisor import Status
from jupyter_modeldeploy.supervisor.replicas import Replica

CONFIG = parse_config({"kind": "llamacpp", "name": "d", "model": "m.gguf", "route": "d", "cors_allow_origins": ["*"]})
PLAN = LaunchPlan(argv=["engine"], models=["m"], routes=LLAMA_SERVER, listen=EngineAddress(socket_path="e.sock"),
                  max_concurrent_requests=2)
VIEW = DeploymentView("d-1", "d", "d", Status.ACTIVE, CONFIG, PLAN, ["m"],
                      [Replica("local", EngineAddress(socket_path="e.sock"), engine_key="k")], "h" * 64, "k")
KEY = KeyView("a" * 64, TokenInfo("t-1", None, "mdk_abc", "d-1", None, 1.0, None, None, models=("m",),
                                   quotas=Quotas(requests_per_minute=3)))
RECORD = RequestRecord("d-1", "m", 200, 0.01, 0.002, Usage(3, 4), True, "t-1", "POST", "/v1/chat/completions",
                       Capture(10, b"req"), door="socket")

BOOK = QuotaBook()
BOOK.seed_day("t-1", 40, 1_000_000.0)

MESSAGES: list[Message] = [
    Handoff(("127.0.0.1", 5123), b"GET / HTTP/1.1\r\n\r\n"),
    State(3, (VIEW,), ("d-0",), (KEY,), ("b" * 64,)),
    State(1, (VIEW,), keys=(KEY,), full=True, quotas=BOOK),
    Ready(123, ("unix:state/gateway.sock",)),
    Started("d-1", "t-1"),
    Finished("d-1", RECORD, book="t-1", tokens=7),
    Finished("d-1", None, started=False),
    Wake("d-1"),
    Woken("d-1"),
    Unreachable("d-1", "local", "connection refused"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_a_message_round_trips_through_its_frame(message: Message) -> None:
    frame = encode(message)
    header = json.loads(json.dumps(frame.header))
    assert header["v"] == PROTOCOL_VERSION
    back = decode(header, frame.body)
    assert type(back) is type(message)
    if isinstance(message, State):
        assert back.deployments[0] == VIEW and back.keys[0].same(KEY) and back.version == message.version
        if message.full:
            assert back.quotas is not None and back.quotas.book("t-1").day_tokens == 40
    elif isinstance(message, Finished) and message.record is not None:
        assert back.record.usage == RECORD.usage and back.record.door == "socket"  # type: ignore[union-attr]
    else:
        assert back == message


@pytest.mark.parametrize(("header", "body"), [
    ({"v": PROTOCOL_VERSION + 1, "kind": "started"}, pickle.dumps(Started("d"))),
    ({"kind": "started"}, pickle.dumps(Started("d"))),
    ({"v": PROTOCOL_VERSION, "kind": "lease"}, pickle.dumps(Started("d"))),
    ({"v": PROTOCOL_VERSION, "kind": "wake"}, pickle.dumps(Started("d"))),  # a kind that holds another message
    ({"v": PROTOCOL_VERSION, "kind": "started"}, b"not a pickle"),
    ({"v": PROTOCOL_VERSION, "kind": "started"}, pickle.dumps({"deployment_id": "d"})),
])
def test_a_frame_of_another_version_kind_or_shape_is_refused(header: dict[str, object], body: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(header, body)
