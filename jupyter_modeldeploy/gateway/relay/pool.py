"""The Jupyter server's side of the stream relay worker (`worker`): start it, hand it requests.

`StreamRelay.relay()` passes a client's socket (a duplicate of its descriptor) and the request to
send (`protocol.Job`); the worker writes the answer and returns the `Outcome`. An answer that ended
cleanly comes back first as an `Ended` report, before the bytes by which its client can tell it ended
(`answer_end`) are written: the server records it, then `StreamRelay.finish()` lets the worker
write the end and returns the final outcome. The server keeps its own copy of the socket
untouched meanwhile, and serves the connection's next request itself afterwards.
A worker that died is started again on the next use (at most every RESTART_AFTER_S); while it is
away, streams run on the server's own loop as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import sys
import time

from .channel import ChannelError, FrameReader, FrameWriter
from .protocol import Ack, Ended, Job, Outcome, ProtocolError, decode, encode

log = logging.getLogger(__name__)

RESTART_AFTER_S = 5.0


def lost(job_id: int) -> Outcome:
    return Outcome(job_id, "lost", message="the stream relay worker exited")


class StreamRelay:
    """One relay worker process and the requests it is relaying."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._writer: FrameWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Ended | Outcome]] = {}
        self._ids = itertools.count(1)
        self._failed_at = -RESTART_AFTER_S
        self._starting: asyncio.Task[bool] | None = None
        self.handed_over = 0  # requests handed to the worker so far

    @staticmethod
    def supported() -> bool:
        """Whether this platform can pass sockets between processes."""
        return hasattr(socket, "send_fds") and hasattr(socket, "AF_UNIX")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None and self._writer is not None

    def available(self) -> bool:
        """Whether the worker runs now; if not, it is started in the background (unless it failed moments ago)."""
        if self.running:
            return True
        if self._starting is None and time.monotonic() - self._failed_at >= RESTART_AFTER_S:
            self._starting = asyncio.create_task(self.start())
        return False

    async def start(self) -> bool:
        """Start the worker (if it is not running); whether it runs."""
        if self.running:
            return True
        if self._starting is not None and self._starting is not asyncio.current_task():
            return await asyncio.shield(self._starting)
        try:
            return await self._start()
        finally:
            self._starting = None

    async def _start(self) -> bool:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "jupyter_modeldeploy.gateway.relay.worker", str(theirs.fileno()),
                pass_fds=[theirs.fileno()], stdin=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            log.warning("the stream relay worker could not start (%s); streams stay on the server's loop", exc)
            ours.close()
            self._failed_at = time.monotonic()
            return False
        finally:
            theirs.close()
        ours.setblocking(False)
        self._writer = FrameWriter(ours)
        self._reader_task = asyncio.create_task(self._read(ours))
        return True

    async def _read(self, sock: socket.socket) -> None:
        reader = FrameReader(sock)
        try:
            while True:
                self._dispatch(*await reader.read())
        except (ChannelError, ValueError) as exc:  # ProtocolError is a ValueError
            log.warning("the stream relay worker went away (%s)", exc)
        finally:
            reader.close()
            sock.close()
            self._writer = None
            self._failed_at = time.monotonic()
            pending, self._pending = self._pending, {}
            for job_id, waiter in pending.items():
                if not waiter.done():
                    waiter.set_result(lost(job_id))

    def _dispatch(self, header: dict[str, object], body: bytes, fd: int | None) -> None:
        """One frame from the worker: a job's `Ended` report or its `Outcome`."""
        if fd is not None:
            socket.socket(fileno=fd).close()  # the worker passes none back; never leak one
        message = decode(header)
        if not isinstance(message, (Ended, Outcome)):
            raise ProtocolError(f"the worker sent a {type(message).__name__}")
        waiter = self._pending.pop(message.id, None)
        if isinstance(message, Ended) and waiter is not None:
            # The final outcome follows the acknowledgement: its waiter is there before it can come.
            self._pending[message.id] = asyncio.get_running_loop().create_future()
        if waiter is not None and not waiter.done():
            waiter.set_result(message)

    def new_id(self) -> int:
        """An id for the next `Job`."""
        return next(self._ids)

    async def relay(self, fd: int, job: Job, body: bytes) -> Ended | Outcome:
        """Hand the client socket `fd` (not closed here) and one request over: the worker's `Ended` report
        (answer `finish` once it is recorded) or its `Outcome`."""
        writer = self._writer
        if writer is None:
            return lost(job.id)
        waiter: asyncio.Future[Ended | Outcome] = asyncio.get_running_loop().create_future()
        self._pending[job.id] = waiter
        self.handed_over += 1
        try:
            await writer.send(encode(job), body, fd=fd)
        except OSError:
            self._pending.pop(job.id, None)
            return lost(job.id)
        return await waiter

    async def finish(self, job_id: int) -> Outcome:
        """After an `Ended` report was recorded: let the worker write the answer's end; the final outcome."""
        waiter = self._pending.get(job_id)
        writer = self._writer
        if waiter is None or writer is None:
            return lost(job_id)
        try:
            await writer.send(encode(Ack(job_id)))
        except OSError:
            self._pending.pop(job_id, None)
            return lost(job_id)
        final = await waiter
        return final if isinstance(final, Outcome) else lost(job_id)

    async def close(self) -> None:
        """Stop the worker (it ends when its channel closes)."""
        process, self._process = self._process, None
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
