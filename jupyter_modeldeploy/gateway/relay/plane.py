"""The Jupyter server's side of the gateway worker (`worker`): start it, publish state to it, hand it connections.

The worker owns endpoint traffic: the server hands it each endpoint connection after reading the
first request's head (`hand_off`), and it admits, counts and relays every request on it. What
the server knows that admission reads (deployments, keys) goes to it as `State` (`publish`);
what it counts comes back in batches (`Started`, `Finished`, `Wake`, `Unreachable`) and is handed
to the `PlaneHost` (the server's gateway) as it arrives; a reader of counts first asks for every
report made so far (`sync()`: one round trip).
A worker that died is started again on the next use (at most every RESTART_AFTER_S); until it
serves, the server serves endpoint requests on its own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .channel import FrameReader, FrameWriter, SentCount
from .protocol import (
    Finished,
    Handoff,
    Message,
    ProtocolError,
    Queued,
    Ready,
    ReplicaLoad,
    Reports,
    Started,
    State,
    Sync,
    Synced,
    Unreachable,
    Wake,
    Woken,
    decode,
    encode,
)

log = logging.getLogger(__name__)

RESTART_AFTER_S = 5.0
READY_WAIT_S = 60.0
SYNC_WAIT_S = 5.0  # a worker that does not answer a `Sync` in this long is read as it is (and is likely gone)


class PlaneHost(Protocol):
    """What the server does with the worker's reports (the server's gateway)."""

    def snapshot(self) -> State: ...

    def started(self, message: Started) -> None: ...

    def finished(self, message: Finished) -> None: ...

    def replica_load_reported(self, message: ReplicaLoad) -> None: ...

    def queue_reported(self, message: Queued) -> None: ...

    def worker_gone(self) -> None: ...

    def released(self, deployment_id: str, book: str | None, tokens: int) -> None: ...

    def wake_requested(self, deployment_id: str) -> None: ...

    def unreachable(self, message: Unreachable) -> None: ...

    def handed_back(self, fd: int, message: Handoff) -> None: ...


@dataclass(frozen=True)
class WorkerSettings:
    """How the worker serves: its timeouts and limits, and its own doors."""

    upstream_timeout_s: float = 600.0
    connect_timeout_s: float = 10.0
    default_payload_limit: int = 16 << 20
    door_socket: Path | None = None  # a Unix socket (0600) same-host clients call without the Jupyter hop
    door_port: int | None = None  # and, when set, a loopback port
    base_url: str = "/"  # the Jupyter server's base URL: connections it hands over carry it in their paths
    event_loop: str = "uvloop"  # the worker's event loop: uvloop (where installed) or asyncio's own
    plain_requests: bool = True  # plain requests answered in callbacks (`plain`); False: all by the exchange

    def argv(self, channel_fd: int, sent_fd: int) -> list[str]:
        args = [sys.executable, "-m", "jupyter_modeldeploy.gateway.relay.worker", "--channel", str(channel_fd),
                "--sent-count", str(sent_fd),
                "--upstream-timeout", str(self.upstream_timeout_s), "--connect-timeout", str(self.connect_timeout_s),
                "--payload-limit", str(self.default_payload_limit), "--base-url", self.base_url,
                "--loop", self.event_loop]
        if not self.plain_requests:
            args.append("--no-plain")
        if self.door_socket is not None:
            args += ["--socket", str(self.door_socket)]
        if self.door_port is not None:
            args += ["--port", str(self.door_port)]
        return args


class DataPlane:
    """One gateway worker process: its channel, and the requests it reported started but not finished."""

    def __init__(self, host: PlaneHost, settings: WorkerSettings):
        self.host = host
        self.settings = settings
        self._process: asyncio.subprocess.Process | None = None
        self._writer: FrameWriter | None = None
        self._reader: FrameReader | None = None
        self._sock: socket.socket | None = None
        self._ready: asyncio.Future[Ready] | None = None
        self._failed_at = -RESTART_AFTER_S
        self._starting: asyncio.Task[bool] | None = None
        self._in_flight: Counter[tuple[str, str | None]] = Counter()  # started, not finished: (deployment, book)
        self.doors: tuple[str, ...] = ()
        self.handed_off = 0  # connections handed to the worker so far
        self._syncs: dict[int, asyncio.Future[None]] = {}  # `Sync` numbers sent, until their `Synced` comes
        self._sync_number = 0

    @staticmethod
    def supported() -> bool:
        """Whether this platform can pass sockets between processes."""
        return hasattr(socket, "send_fds") and hasattr(socket, "AF_UNIX")

    @property
    def serving(self) -> bool:
        """Whether the worker runs and said it serves."""
        return (self._writer is not None and self._ready is not None and self._ready.done()
                and self._process is not None and self._process.returncode is None)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _may_start(self) -> bool:
        return self._starting is None and self._writer is None and time.monotonic() - self._failed_at >= RESTART_AFTER_S

    def available(self) -> bool:
        """Whether the worker serves now; if not, it is started in the background (unless it failed moments ago)."""
        if self.serving:
            return True
        if self._may_start():
            self._starting = asyncio.create_task(self._start_once())
        return False

    async def ready(self) -> bool:
        """Whether the worker serves, waiting for a start under way (one is begun unless it failed moments ago)."""
        if self.serving:
            return True
        if self._starting is None and not self._may_start():
            return False
        return await self.start()

    async def start(self) -> bool:
        """Start the worker (or join the start under way) and wait until it serves; whether it does."""
        if self.serving:
            return True
        if self._starting is None:
            self._starting = asyncio.create_task(self._start_once())
        return await asyncio.shield(self._starting)

    async def _start_once(self) -> bool:
        try:
            return await self._start()
        finally:
            self._starting = None

    async def _start(self) -> bool:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sent = SentCount.create()  # the frames sent to the worker: it settles only when this moved
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.settings.argv(theirs.fileno(), sent.fd), pass_fds=[theirs.fileno(), sent.fd],
                stdin=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            log.warning("the gateway worker could not start (%s); endpoints are served on the server's loop", exc)
            ours.close()
            self._failed_at = time.monotonic()
            return False
        finally:
            theirs.close()
            os.close(sent.fd)
        ours.setblocking(False)
        self._sock = ours
        self._writer = FrameWriter(ours, sent)
        self._ready = asyncio.get_running_loop().create_future()
        self._reader = FrameReader(ours, self._frame, self._lost)
        self._reader.start()
        try:
            self._send(self.host.snapshot())
            ready = await asyncio.wait_for(asyncio.shield(self._ready), READY_WAIT_S)
        except (OSError, asyncio.TimeoutError, RuntimeError) as exc:
            log.warning("the gateway worker did not start serving (%s)", exc)
            self._lost(f"it did not start serving ({exc})")
            return False
        self.doors = ready.doors
        return True

    def _send(self, message: Message, fd: int | None = None) -> None:
        writer = self._writer
        if writer is None:
            raise OSError("the gateway worker is not running")
        frame = encode(message)
        writer.send(frame.header, frame.body, fd=fd)

    def woken(self, deployment_id: str) -> None:
        """Tell the worker a wake it asked for is over (after the state it led to was published)."""
        if self._writer is not None:
            try:
                self._send(Woken(deployment_id))
            except OSError as exc:
                self._lost(f"a wake's end could not be sent ({exc})")

    def publish(self, state: State) -> bool:
        """Send a state change (synchronously: in the worker's queue when this returns); False when no worker runs."""
        if self._writer is None:
            return False
        try:
            self._send(state)
        except OSError as exc:
            self._lost(f"a state change could not be sent ({exc})")
            return False
        return True

    def hand_off(self, fd: int, address: Any, prefix: bytes) -> bool:
        """Give the worker a client connection (`fd` is not closed here); False when it could not be sent."""
        if not self.serving:
            return False
        try:
            self._send(Handoff(address, prefix), fd=fd)
        except OSError as exc:
            self._lost(f"a connection could not be handed over ({exc})")
            return False
        self.handed_off += 1
        return True

    def settle(self) -> None:
        """Take every report the worker sent so far."""
        if self._reader is not None:
            self._reader.settle()

    async def sync(self) -> None:
        """Take every report the worker made before this call (a reader of counts awaits this first): a request
        whose client had its answer by then is counted when this returns."""
        if not self.serving:
            self.settle()
            return
        self._sync_number += 1
        number = self._sync_number
        done = self._syncs[number] = asyncio.get_running_loop().create_future()
        try:
            self._send(Sync(number))
            await asyncio.wait_for(asyncio.shield(done), SYNC_WAIT_S)
        except (OSError, asyncio.TimeoutError) as exc:
            log.warning("the gateway worker did not send its reports (%s); counts are read as they are", exc)
        finally:
            self._syncs.pop(number, None)

    def _frame(self, header: dict[str, Any], body: bytes, fd: int | None) -> None:
        try:
            message = decode(header, body)
        except ProtocolError:
            if fd is not None:
                os.close(fd)
            raise
        host = self.host
        if isinstance(message, Handoff) and fd is not None:
            host.handed_back(fd, message)  # the host owns the descriptor now
            return
        if fd is not None:
            os.close(fd)  # only a connection handed back comes with one; never leak one
        if isinstance(message, Reports):
            for report in message.messages:
                self._report(report)
        elif isinstance(message, Synced):
            self._synced(message.number)
        else:
            self._report(message)

    def _synced(self, up_to: float) -> None:
        """`Synced(up_to)` came: the reports of that `Sync` and of every one sent before it are in."""
        for number, done in self._syncs.items():
            if number <= up_to and not done.done():
                done.set_result(None)

    def _report(self, message: Message) -> None:
        host = self.host
        if isinstance(message, Started):
            self._in_flight[message.deployment_id, message.book] += 1
            host.started(message)
        elif isinstance(message, Finished):
            if message.started and self._in_flight[message.deployment_id, message.book] > 0:
                self._in_flight[message.deployment_id, message.book] -= 1
            host.finished(message)
        elif isinstance(message, Wake):
            host.wake_requested(message.deployment_id)
        elif isinstance(message, Unreachable):
            host.unreachable(message)
        elif isinstance(message, ReplicaLoad):
            host.replica_load_reported(message)
        elif isinstance(message, Queued):
            host.queue_reported(message)
        elif isinstance(message, Ready):
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(message)
        else:
            raise ProtocolError(f"the worker sent a {type(message).__name__}")

    def _lost(self, reason: str, kill: bool = True) -> None:
        """The worker is gone: what it had in flight is released; the next use starts another."""
        if self._writer is None:
            return
        log.warning("the gateway worker went away (%s)", reason)
        self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(RuntimeError(reason))
            self._ready.exception()  # retrieved: a start that gave up waiting does not leave it unread
        self._failed_at = time.monotonic()
        self._synced(math.inf)  # its reports will not come: the readers waiting read what came
        in_flight, self._in_flight = self._in_flight, Counter()
        for (deployment_id, book), count in in_flight.items():
            for _ in range(count):
                self.host.released(deployment_id, book, 0)
        self.host.worker_gone()
        process = self._process
        if kill and process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    async def close(self) -> None:
        """Stop the worker (it ends when its channel closes)."""
        process = self._process
        self._lost("the server stops", kill=False)  # the worker ends when its channel closes
        self._process = None
        if process is not None:
            try:
                await asyncio.wait_for(process.wait(), 5)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
