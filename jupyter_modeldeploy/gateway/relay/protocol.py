"""What the Jupyter server and the gateway worker say to each other: frozen messages, versioned.

    server → worker   Handoff   a client connection (its socket passed with the frame) and the bytes
                                the server read of it already (the first request's head)
    server → worker   State     the gateway's view of the deployments and keys, changes since the
                                last version (or all of it, `full`)
    worker → server   Ready     the worker serves: hand-offs may come, its doors are open
    worker → server   Handoff   a connection handed over whose next request is not an endpoint's (a proxy
                                such as JupyterHub's sends every path on its kept connections): the
                                server serves it again, from that request on
    worker → server   Started   a request was admitted (the deployment's idle clock, its in-flight count)
    worker → server   Finished  a request ended: its record (sent before the client can tell it ended)
    worker → server   Wake      a caller with a valid key found the deployment asleep
    server → worker   Woken     the wake it asked for is over (serving, or failed: the state says which)
    worker → server   Unreachable  a replica could not be connected to
    worker → server   ReplicaLoad  a request was sent to a replica of a placed deployment, or left it (the server's
                                count drains a replica it removes)
    worker → server   Queued    a deployment's waiting line changed: its depth and counts so far
    worker → server   Reports   the reports above as they gathered (`outbox`: sent every REPORT_EVERY_S, or
                                at once for what the server acts on), in order
    server → worker   Sync      a reader of counts waits: send every report made so far, then `Synced`
    worker → server   Synced    every report made before the `Sync` of that number is in the server's queue

Each travels as one channel frame (`channel`): a JSON header with its kind and `PROTOCOL_VERSION`,
and the message pickled in the body. Both ends are this package's own processes (the worker is
the server's child, on a socket pair it inherited), so pickle carries the configs and plans as
they are; `decode` refuses a frame of another version or kind, or a body that is not that
kind's message (ProtocolError), so a worker from another install cannot be misread.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

from ..quotas import QuotaBook
from ..records import RequestRecord
from ..view import DeploymentView, KeyView
from ..waiting_line import LineStats

PROTOCOL_VERSION = 5


class ProtocolError(ValueError):
    """A frame that is not a message of this protocol's version."""


@dataclass(frozen=True)
class Handoff:
    """A client connection for the worker to serve from now on (its socket travels with the frame)."""

    address: Any  # the client's address, as the server's socket reported it
    prefix: bytes = b""  # what the server read of the connection: the first request's head, and any body bytes


@dataclass(frozen=True)
class State:
    """Deployments and keys as admission reads them: what changed since `version - 1`, or everything (`full`)."""

    version: int
    deployments: tuple[DeploymentView, ...] = ()  # new or changed
    removed: tuple[str, ...] = ()  # deployment ids
    keys: tuple[KeyView, ...] = ()  # new or changed generated keys
    dropped: tuple[str, ...] = ()  # key hashes no longer known
    full: bool = False  # everything: what the worker held before is replaced
    quotas: QuotaBook | None = None  # (full only) every key's quota counts so far: a new worker goes on from them


@dataclass(frozen=True)
class Ready:
    """The worker applied the first state and serves; `doors`: where it listens itself."""

    pid: int
    doors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Started:
    """The worker admitted a request for a deployment."""

    deployment_id: str
    book: str | None = None  # the quota book it took a place in


@dataclass(frozen=True)
class Finished:
    """A request the worker admitted ended; its record (None: refused before it was counted as started)."""

    deployment_id: str
    record: RequestRecord | None
    started: bool = True  # it had been reported `Started`
    book: str | None = None  # the quota book whose place it gives back
    tokens: int = 0  # what it used, counted in that book


@dataclass(frozen=True)
class Wake:
    """A caller with a valid key is waiting for a sleeping deployment."""

    deployment_id: str


@dataclass(frozen=True)
class Woken:
    """The server's wake of a deployment ended; the state published before this says how."""

    deployment_id: str


@dataclass(frozen=True)
class Sync:
    """A reader of counts waits for every report the worker made so far (answered by `Synced`)."""

    number: int


@dataclass(frozen=True)
class Synced:
    """Every report made before the `Sync` of this number was sent ahead of this."""

    number: int


@dataclass(frozen=True)
class Unreachable:
    """The worker could not connect to a replica; it leaves the rotation."""

    deployment_id: str
    replica_id: str
    reason: str = ""


@dataclass(frozen=True)
class ReplicaLoad:
    """A request was sent to (`delta` +1) or left (-1) a replica of a placed (Ray) deployment."""

    deployment_id: str
    replica_id: str
    delta: int


@dataclass(frozen=True)
class Queued:
    """A deployment's waiting line (`waiting_line`) as it is now in the worker."""

    deployment_id: str
    stats: LineStats


Report = Started | Finished | Wake | Unreachable | ReplicaLoad | Queued


@dataclass(frozen=True)
class Reports:
    """Reports the worker gathered in one turn of its loop, in the order they were made."""

    messages: tuple[Report, ...]


Message = (Handoff | State | Ready | Started | Finished | Wake | Woken | Unreachable | ReplicaLoad | Queued | Reports
           | Sync | Synced)
KINDS: dict[str, type[Any]] = {
    "handoff": Handoff, "state": State, "ready": Ready, "started": Started, "finished": Finished, "wake": Wake, "woken": Woken,
    "unreachable": Unreachable, "replica_load": ReplicaLoad, "queued": Queued, "reports": Reports, "sync": Sync,
    "synced": Synced,
}
_NAMES = {cls: name for name, cls in KINDS.items()}


@dataclass(frozen=True)
class Frame:
    """A message as it travels: header and body."""

    header: dict[str, Any]
    body: bytes = field(repr=False, default=b"")


def encode(message: Message) -> Frame:
    """A message as a frame."""
    return Frame({"v": PROTOCOL_VERSION, "kind": _NAMES[type(message)]}, pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def decode(header: dict[str, Any], body: bytes) -> Message:
    """A frame as its message; ProtocolError for another version, kind or shape."""
    if header.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"a frame of protocol version {header.get('v')!r}, not {PROTOCOL_VERSION}")
    cls = KINDS.get(str(header.get("kind")))
    if cls is None:
        raise ProtocolError(f"a frame of unknown kind {header.get('kind')!r}")
    try:
        message = pickle.loads(body)
    except Exception as exc:
        raise ProtocolError(f"a {header.get('kind')} frame that cannot be read: {type(exc).__name__}") from None
    if type(message) is not cls:
        raise ProtocolError(f"a {header.get('kind')} frame holding a {type(message).__name__}")
    return message
