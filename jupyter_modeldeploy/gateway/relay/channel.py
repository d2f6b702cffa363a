"""Frames between the Jupyter server and its gateway worker, over one Unix socket pair.

A frame is a JSON header and an optional body, prefixed by their two lengths (4 bytes each,
big-endian). A frame may carry one file descriptor (a client's socket, passed with
SCM_RIGHTS): the kernel delivers it no later than the frame's first byte and in the order sent,
so a reader keeps received descriptors in a queue and takes one for each frame that says it
has one (`"fd": true`).

Both directions are synchronous, and that is what orders them: `FrameWriter.send` returns once
the frame is in the other side's receive queue, and `FrameReader.settle` hands over, there and
then, every frame already queued. So a side that sends a frame before it answers a client, and a
side that settles before it reads its state, agree by construction: whatever the client does after
its answer finds the frame applied (see `feed` and `plane`).

Settling costs a `recvmsg` even when nothing came, and the worker settles before every request. So
the server also counts the frames it sent in a few bytes of memory both processes map (`SentCount`,
bumped once a frame is wholly queued), and the worker settles only when that count moved past the
one it last settled at (`settle_new`): the same order by construction, one syscall a request fewer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mmap
import os
import socket
import struct
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

PREFIX = struct.Struct(">II")
MAX_HEADER_BYTES = 1 << 20
MAX_BODY_BYTES = 256 << 20
RECV_BYTES = 256 * 1024
SEND_WAIT_S = 10.0  # the longest a send waits for room (the other side reads continuously)

log = logging.getLogger(__name__)

#: Called with each frame: header, body and its descriptor (the callee owns it).
FrameHandler = Callable[[dict[str, Any], bytes, int | None], None]


class ChannelError(Exception):
    """The other side broke the framing (or went away)."""


def encode(header: dict[str, Any], body: bytes = b"") -> bytes:
    """One frame's bytes."""
    data = json.dumps(header, separators=(",", ":")).encode()
    return PREFIX.pack(len(data), len(body)) + data + body


class SentCount:
    """How many frames one side sent, in memory the other side maps too (see the module's docstring)."""

    COUNT = struct.Struct("<Q")

    def __init__(self, fd: int):
        self.fd = fd  # the memory's file, for the other process (`pass_fds`): the caller closes it (the map stays)
        self._memory = mmap.mmap(fd, self.COUNT.size)
        self._sent = self.value()

    @classmethod
    def create(cls) -> SentCount:
        """A new count at 0, in anonymous memory (a file no other process can open by name)."""
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("modeldeploy-channel")
        else:  # pragma: no cover - not Linux
            with tempfile.TemporaryFile() as file:
                fd = os.dup(file.fileno())
        os.ftruncate(fd, cls.COUNT.size)
        return cls(fd)

    def bump(self) -> None:
        """One more frame sent (the writer's side: it alone changes the count)."""
        self._sent += 1
        self.COUNT.pack_into(self._memory, 0, self._sent)

    def value(self) -> int:
        return int(self.COUNT.unpack_from(self._memory)[0])


class FrameWriter:
    """Sends frames on a non-blocking socket, each whole before `send` returns (and counted in `sent`, if given)."""

    def __init__(self, sock: socket.socket, sent: SentCount | None = None):
        self._sock = sock
        self._sent = sent
        self._lock = threading.Lock()  # frames never interleave, whichever thread sends

    def send(self, header: dict[str, Any], body: bytes = b"", fd: int | None = None) -> None:
        """Put one frame (and `fd`, not closed here) in the other side's queue; OSError when it is gone."""
        data = memoryview(encode({**header, "fd": fd is not None}, body))
        with self._lock:
            self._send(data, fd)
            if self._sent is not None:
                self._sent.bump()

    def _send(self, data: memoryview, fd: int | None) -> None:
        try:
            sent = socket.send_fds(self._sock, [data], [fd]) if fd is not None else self._sock.send(data)
        except BlockingIOError:
            if fd is not None:
                self._blocking(lambda: socket.send_fds(self._sock, [data], [fd]))
                return
            sent = 0
        if sent < len(data):
            rest = data[sent:]
            self._blocking(lambda: self._sock.sendall(rest))

    def _blocking(self, send: Callable[[], object]) -> None:
        """The queue is full (the other side is busy): wait for room, briefly blocking this thread."""
        self._sock.settimeout(SEND_WAIT_S)
        try:
            send()
        except TimeoutError as exc:
            raise OSError("the other side of the channel stopped reading") from exc
        finally:
            self._sock.setblocking(False)


class FrameReader:
    """Reads frames (and the descriptors they carry) from a non-blocking socket and hands each to `on_frame`.

    The socket stays registered with the event loop, whose callback takes whatever arrived and
    hands over every complete frame at once; `settle()` does the same on demand, synchronously.
    `on_end` is called once, with the reason, when the channel ends or breaks.
    """

    def __init__(self, sock: socket.socket, on_frame: FrameHandler, on_end: Callable[[str], None],
                 sent: SentCount | None = None):
        self._sock = sock
        self._sent = sent  # the other side's count of frames sent, where it keeps one
        self._settled_at = -1  # that count when the last settle began
        self._on_frame = on_frame
        self._on_end = on_end
        self._buffer = bytearray()
        self._fds: deque[int] = deque()
        self._ended = False
        self._settling = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Watch the socket on the running loop (and take what came before)."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self.settle)
        self.settle()

    def settle_new(self) -> None:
        """`settle`, if the other side sent a frame since the last one began (without its count: always)."""
        if self._sent is None or self._sent.value() != self._settled_at:
            self.settle()

    def settle(self) -> None:
        """Hand over every frame the socket holds now (a frame's handler that settles again does nothing)."""
        if self._ended or self._settling:
            return
        if self._sent is not None:
            self._settled_at = self._sent.value()  # read first: a frame counted later is read now or settled next
        self._settling = True
        try:
            self._settle()
        finally:
            self._settling = False

    def _settle(self) -> None:
        eof = False
        while True:
            try:
                data, fds, _flags, _address = socket.recv_fds(self._sock, RECV_BYTES, 8, socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._end(f"the channel failed ({exc})")
                return
            self._fds.extend(fds)
            if not data:
                eof = True
                break
            self._buffer += data
        try:
            while (frame := self._take()) is not None:
                try:
                    self._on_frame(*frame)
                except Exception:  # one frame its handler could not take: logged; the frames after it still count
                    log.exception("a frame from the other side of the channel could not be taken")
        except ChannelError as exc:
            self._end(str(exc))
            return
        if eof:
            self._end("the other side closed the channel" if not self._buffer
                      else "the other side closed the channel mid-frame")

    def _take(self) -> tuple[dict[str, Any], bytes, int | None] | None:
        """The first frame in the buffer, once it is all there."""
        if self._ended or len(self._buffer) < PREFIX.size:
            return None
        header_len, body_len = PREFIX.unpack_from(self._buffer)
        if header_len > MAX_HEADER_BYTES or body_len > MAX_BODY_BYTES:
            raise ChannelError("a frame larger than the channel allows")
        end = PREFIX.size + header_len + body_len
        if len(self._buffer) < end:
            return None
        try:
            header = json.loads(bytes(self._buffer[PREFIX.size:PREFIX.size + header_len]))
        except ValueError as exc:
            raise ChannelError(f"a frame header that is not JSON ({exc})") from None
        if not isinstance(header, dict):
            raise ChannelError("a frame header that is not an object")
        body = bytes(self._buffer[PREFIX.size + header_len:end])
        del self._buffer[:end]
        fd = None
        if header.get("fd"):
            if not self._fds:
                raise ChannelError("a frame announced a descriptor that did not arrive")
            fd = self._fds.popleft()
        return header, body, fd

    def _end(self, reason: str) -> None:
        if self._ended:
            return
        self.close()
        self._on_end(reason)

    def close(self) -> None:
        """Stop reading; close descriptors received but not handed out."""
        self._ended = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())
        while self._fds:
            os.close(self._fds.popleft())
