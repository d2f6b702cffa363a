"""The stream relay worker: a process of its own that passes streamed answers from engines to clients.

The Jupyter server admits a request (key, limits, body, model) on its own event loop, then hands
the client's socket to this process with the request to send (`pool.StreamRelay`). Here
the request goes to the engine (the same pooled aiohttp client as in the server), and the answer
is written to the client's socket as it arrives, usage read on the way (`UsageTap`). The outcome
(status, usage, time to first chunk) goes back to the server, which counts it and, when the
answer ended cleanly on a keep-alive connection, serves the client's next request itself. An
answer that ended cleanly is reported before the bytes by which its client can tell it ended
(`answer_end`), and they wait for the server's acknowledgement: by the time a client has its
whole answer, the request is counted.

So a fast stream costs the Jupyter server one hand-over, not one loop turn per event: a
JupyterLab user sharing the server with busy endpoints keeps a responsive server.

    python -m jupyter_modeldeploy.gateway.relay.worker <channel fd>
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable

from ..answer_end import AnswerEnd
from ..headers import returned_header
from ..response_head import LAST_CHUNK, NO_BODY_STATUSES, HeaderRefused, chunk, render_head
from ..upstream import UpstreamClient, UpstreamError, UpstreamResponse, UpstreamTimeout, UpstreamUnreachable
from ..usage import Usage, UsageTap
from .channel import ChannelError, FrameReader, FrameWriter
from .protocol import Ack, Ended, Job, Outcome, OutcomeKind, ProtocolError, decode, encode

log = logging.getLogger("jupyter_modeldeploy.relay_worker")

FLUSH_EVERY_S = 0.005  # body bytes reach the client within 5 ms, in batches (first bytes at once)
HIGH_WATER = 256 * 1024  # bytes queued for a client before the relay waits for it (a slow client holds the engine back)
NICENESS = 19  # the lowest priority: see `main`
RECORD_WAIT_S = 10.0  # the longest an answer's end waits for the server to record it
PEEK_EVERY_S = 0.25  # how often a silent client's socket is checked for a hang-up


EndReporter = Callable[[Ended], Awaitable[None]]


class ClientSide(asyncio.Protocol):
    """The client's socket, write-only: nothing the client sends next is read here (the server reads it)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.gone = False
        self.chunked = False  # body bytes are sent as chunks of the chunked encoding
        self._pending: list[bytes] = []
        self._last_flush = -1.0
        self._timer: asyncio.TimerHandle | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.pause_reading()
        transport.set_write_buffer_limits(high=HIGH_WATER)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self._writable.set()
        self._lost.set()

    def write(self, data: bytes) -> None:
        if not self.gone and self.transport is not None:
            self.transport.write(data)

    def send_body(self, data: bytes) -> None:
        """Body bytes: sent at once when the last batch went out FLUSH_EVERY_S ago, else with the next batch.

        A fast engine's events come one read each; a write (and a read on the client's side) per
        event would cost more than the relaying itself."""
        self._pending.append(data)
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._last_flush >= FLUSH_EVERY_S:
            self.flush_body()
        elif self._timer is None:
            self._timer = loop.call_at(self._last_flush + FLUSH_EVERY_S, self.flush_body)

    def discard(self) -> None:
        """Drop what is held back (the client is gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()

    def flush_body(self) -> None:
        """Send the body bytes held back (as one chunk)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self._last_flush = asyncio.get_running_loop().time()
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self.write(chunk(data) if self.chunked else data)

    async def drain(self) -> None:
        await self._writable.wait()

    async def flushed(self) -> bool:
        """Wait until every byte written reached the kernel; False when the client went away."""
        if self.gone or self.transport is None:
            return False
        self.transport.set_write_buffer_limits(high=0, low=0)  # pauses us now if anything is queued
        await self._writable.wait()
        return not self.gone

    @staticmethod
    def hung_up(sock: socket.socket) -> bool:
        """Whether the client closed its side (a peek: bytes of a next request are left where they are)."""
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True


class RelayWorker:
    """Runs the jobs the server sends: one task per streamed request."""

    def __init__(self, channel: socket.socket):
        self.reader = FrameReader(channel)
        self.writer = FrameWriter(channel)
        self.upstream = UpstreamClient()
        self._tasks: set[asyncio.Task[None]] = set()
        self._acks: dict[int, asyncio.Future[None]] = {}  # answers whose end waits for the server's record

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)  # type: ignore[arg-type]
        if not task.cancelled() and task.exception() is not None:
            log.error("a relay task failed", exc_info=task.exception())

    async def serve(self) -> None:
        try:
            while True:
                header, body, fd = await self.reader.read()
                try:
                    message = decode(header)
                except ProtocolError as exc:
                    log.error("a frame the worker cannot read: %s", exc)
                    message = None
                if isinstance(message, Job) and fd is not None:
                    self._spawn(self.run(message, body, fd))
                    continue
                if fd is not None:
                    os.close(fd)  # a descriptor with no job to answer on: never leak one
                if isinstance(message, Ack):
                    waiter = self._acks.pop(message.id, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
        except ChannelError:
            pass  # the server went away: so do we
        finally:
            self.reader.close()
            await self.upstream.close()

    async def run(self, job: Job, body: bytes, fd: int) -> None:
        """Relay one job and send its outcome."""
        try:
            outcome = await relay(self.upstream, job, body, fd, self.report_end)
        except Exception as exc:  # whatever happened, the server must hear of this request
            log.exception("relay failed")
            outcome = Outcome(job.id, "cut", 502, message=f"the relay failed ({type(exc).__name__})")
        with contextlib.suppress(ChannelError, OSError):
            await self.writer.send(encode(outcome))

    async def report_end(self, report: Ended) -> None:
        """Tell the server an answer ended (status, usage), and wait until it has recorded it.

        Only then does the client get the bytes that tell it the answer ended: a client that asks
        for its usage, or sends its next request under an in-flight quota, the moment it has its
        answer finds this request counted, as on the server's own loop."""
        waiter = asyncio.get_running_loop().create_future()
        self._acks[report.id] = waiter
        try:
            await self.writer.send(encode(report))
            await asyncio.wait_for(waiter, RECORD_WAIT_S)
        except (ChannelError, OSError, asyncio.TimeoutError):
            pass  # the server is gone or stuck: the client gets its answer's end regardless
        finally:
            self._acks.pop(report.id, None)


def answer_head(upstream: UpstreamResponse, job: Job,
                tap: UsageTap) -> tuple[bytes, bool, bool, int | None]:
    """The head for the client, whether the body goes chunked, whether the connection stays open, and
    the body's length as the client will count it (0: no body follows; None: chunked)."""
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in upstream.raw_headers]
    headers = [(n, v) for n, v in headers if returned_header(n)]
    if tap.drop_injected_usage:
        headers = [(n, v) for n, v in headers if n.lower() != "content-length"]
    headers += list(job.cors)
    keep_alive = job.keep_alive
    chunked = False
    length: int | None = 0
    if upstream.status not in NO_BODY_STATUSES and job.method != "HEAD":
        lengths = [v for n, v in headers if n.lower() == "content-length"]
        chunked = not lengths
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
            length = None
        else:
            value = lengths[0].strip()
            length = int(value) if value.isdigit() else None  # aiohttp read it as a number already
    if not keep_alive:
        headers.append(("Connection", "close"))
    return render_head(upstream.status, upstream.reason, headers), chunked, keep_alive, length


def usage_pair(usage: Usage | None) -> tuple[int, int] | None:
    return (usage.prompt_tokens, usage.completion_tokens) if usage is not None else None


class Watch:
    """Notices a client that hangs up while the engine is silent (a long prompt), and ends the request."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.gone = False
        self.upstream: UpstreamResponse | None = None
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self.gone:
            await asyncio.sleep(PEEK_EVERY_S)
            if ClientSide.hung_up(self.sock):
                self.gone = True
                if self.upstream is not None:
                    self.upstream.close()  # the engine sees the client leave, and stops

    def stop(self) -> None:
        self._task.cancel()


async def relay(client: UpstreamClient, job: Job, body: bytes, fd: int, report_end: EndReporter) -> Outcome:
    """Send one request to its engine and write the answer to the client's socket `fd` (closed here).

    When the engine's answer ended cleanly, `report_end` is awaited before the client gets the
    bytes by which it can tell the answer ended (`AnswerEnd`): it has its whole answer only once
    the request is counted."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        # Events go out as they come: with Nagle's algorithm the first event would wait for the
        # client's ACK of the head (tornado sets this only while it finishes an answer).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    watch = Watch(sock)
    try:
        return await _relay(client, job, body, sock, watch, report_end)
    finally:
        watch.stop()
        if sock.fileno() != -1 and watch.upstream is None:
            sock.close()


async def _relay(client: UpstreamClient, job: Job, body: bytes, sock: socket.socket,
                 watch: Watch, report_end: EndReporter) -> Outcome:
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    try:
        upstream = await client.request(job.address, job.method, job.target, list(job.headers), body,
                                        timeout=job.timeout_s)
    except UpstreamUnreachable as exc:
        return Outcome(job.id, "unreachable", message=str(exc))
    except UpstreamTimeout as exc:
        return Outcome(job.id, "timeout", message=str(exc))
    except UpstreamError as exc:
        return Outcome(job.id, "error", message=str(exc))
    if watch.gone:
        upstream.close()
        return Outcome(job.id, "gone", upstream.status)
    tap = UsageTap(upstream.headers.get("Content-Type", ""), drop_injected_usage=job.injected)
    try:
        head, chunked, keep_alive, length = answer_head(upstream, job, tap)
    except HeaderRefused as exc:
        upstream.close()
        return Outcome(job.id, "error", message=f"the engine's answer could not be passed on: {exc}")
    watch.upstream = upstream
    _, side = await loop.connect_accepted_socket(ClientSide, sock)
    assert isinstance(side, ClientSide)
    first_chunk: float | None = None
    outcome: OutcomeKind = "done"
    usage: Usage | None = None
    side.chunked = chunked
    end = AnswerEnd(sse=tap.is_sse, body_length=length)
    side.write(end.head(head))
    try:
        async for data in upstream.iter_body():
            if first_chunk is None:
                first_chunk = time.perf_counter() - started
            out = end.pass_on(tap.feed(data))
            if out:
                side.send_body(out)
                await side.drain()
            if side.gone or watch.gone:
                upstream.close()  # the engine sees the client leave, and stops
                outcome = "gone"
                break
        else:
            last = end.pass_on(tap.close())
            usage = tap.finish()
            if last:
                side.send_body(last)
            await report_end(Ended(job.id, upstream.status, first_chunk, tap.is_sse, usage_pair(usage)))
            # Counted: now the bytes by which the client can tell its answer ended.
            held_head, held_body = end.release()
            if held_head:
                side.write(held_head)
            if held_body:
                side.send_body(held_body)
            side.flush_body()
            if chunked:
                side.write(LAST_CHUNK)
    except UpstreamError:
        outcome = "gone" if watch.gone or side.gone else "cut"  # a cut answer must look cut: the server closes it
    if outcome == "done" and not await side.flushed():
        outcome = "gone"
    if outcome != "done":
        usage = tap.finish()  # a clean end read it already, before its report
    assert side.transport is not None
    if outcome == "done":
        side.transport.close()  # our copy only: the server's keeps the connection open
    elif outcome == "cut":
        _, held_body = end.release()
        if held_body:
            side.send_body(held_body)
        side.flush_body()  # what the engine sent reaches the client, then the end without a last chunk
        side.transport.close()
    else:
        side.discard()
        side.transport.abort()
    return Outcome(job.id, outcome, upstream.status, first_chunk, tap.is_sse, usage_pair(usage),
                   reusable=outcome == "done" and keep_alive)


def main(argv: list[str] | None = None) -> int:
    """Run the worker on the channel descriptor the server passed."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="[relay worker] %(levelname)s %(message)s")
    # Below the Jupyter server's priority: where CPU is short, its own requests (a notebook, Lab)
    # come before relaying more events; with cores to spare this changes nothing. The lowest
    # priority still keeps up: relaying sleeps between reads, and the scheduler runs a task that
    # woke with little CPU used promptly (bench README: Jupyter's p50 under 20,000 events/s, nice 5
    # against 19, the same events/s relayed).
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    channel = socket.socket(fileno=int(args[0]))
    channel.setblocking(False)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(RelayWorker(channel).serve())
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
