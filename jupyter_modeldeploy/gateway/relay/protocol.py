"""What the Jupyter server and the relay worker say to each other: four frozen messages, versioned.

    server → worker   Job      a request to send and the client socket to answer on (passed with it)
    worker → server   Ended    the answer ended cleanly: record it (status, usage); its end is held
    server → worker   Ack      recorded: write the answer's end
    worker → server   Outcome  the request is done (or never reached its engine, or was cut)

Each travels as the JSON header of one channel frame (`channel`), with its kind and
`PROTOCOL_VERSION`; `decode` refuses a frame of another version or kind (ProtocolError), so a
worker from another install cannot be misread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from ...engines.base import EngineAddress

PROTOCOL_VERSION = 1

#: How a relayed request ended: `done` (answered cleanly), `gone` (the client left), `cut` (the engine
#: broke off), or it never reached the engine (`unreachable`, `timeout`, `error`), nothing written.
OutcomeKind = Literal["done", "gone", "cut", "unreachable", "timeout", "error", "lost"]


class ProtocolError(ValueError):
    """A frame that is not a message of this protocol's version."""


@dataclass(frozen=True)
class Job:
    """A request for the worker to send to an engine and answer on the client's socket."""

    id: int
    method: str
    target: str  # the engine path and query
    address: EngineAddress
    headers: tuple[tuple[str, str], ...]  # to the engine, with the engine's key
    timeout_s: float
    keep_alive: bool = True  # the client's connection stays open after the answer
    injected: bool = False  # the gateway asked for stream usage: the event it added is removed
    cors: tuple[tuple[str, str], ...] = ()  # headers added to the answer


@dataclass(frozen=True)
class Ended:
    """The engine's answer ended cleanly; the bytes by which the client can tell are held until `Ack`."""

    id: int
    status: int
    first_chunk_s: float | None = None
    streamed: bool = False
    usage: tuple[int, int] | None = None  # prompt and completion tokens


@dataclass(frozen=True)
class Ack:
    """The server recorded the request: the worker writes its answer's end."""

    id: int


@dataclass(frozen=True)
class Outcome:
    """A relayed request is done; `reusable`: the client's connection may serve its next request."""

    id: int
    outcome: OutcomeKind
    status: int = 0
    first_chunk_s: float | None = None
    streamed: bool = False
    usage: tuple[int, int] | None = None
    reusable: bool = False
    message: str = ""


Message = Job | Ended | Ack | Outcome
KINDS: dict[str, type[Job] | type[Ended] | type[Ack] | type[Outcome]] = {
    "job": Job, "ended": Ended, "ack": Ack, "outcome": Outcome,
}


def encode(message: Message) -> dict[str, Any]:
    """A message as a frame header."""
    kind = next(name for name, cls in KINDS.items() if isinstance(message, cls))
    document = asdict(message)
    if isinstance(message, Job):
        document["address"] = {"socket_path": message.address.socket_path, "host": message.address.host,
                               "port": message.address.port}
    return {"v": PROTOCOL_VERSION, "kind": kind, **document}


def decode(header: dict[str, Any]) -> Message:
    """A frame header as its message; ProtocolError for another version, kind or shape."""
    if header.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"a frame of protocol version {header.get('v')!r}, not {PROTOCOL_VERSION}")
    cls = KINDS.get(str(header.get("kind")))
    if cls is None:
        raise ProtocolError(f"a frame of unknown kind {header.get('kind')!r}")
    fields = {k: v for k, v in header.items() if k not in ("v", "kind", "fd")}
    try:
        if cls is Job:
            address = fields.pop("address")
            fields["address"] = EngineAddress(socket_path=address.get("socket_path"),
                                              host=address.get("host", "127.0.0.1"), port=address.get("port"))
            fields["headers"] = tuple((str(n), str(v)) for n, v in fields["headers"])
            fields["cors"] = tuple((str(n), str(v)) for n, v in fields.get("cors", ()))
        elif "usage" in fields and fields["usage"] is not None:
            fields["usage"] = (int(fields["usage"][0]), int(fields["usage"][1]))
        return cls(**fields)
    except (TypeError, KeyError, ValueError, IndexError, AttributeError) as exc:
        raise ProtocolError(f"a {header.get('kind')} frame of the wrong shape: {exc}") from None
