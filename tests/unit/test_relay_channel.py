"""The frames between the server and its gateway worker: order, descriptors, splits, ends, and settling at once."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
from typing import Any

import pytest

from jupyter_modeldeploy.gateway.relay import channel
from jupyter_modeldeploy.gateway.relay.channel import FrameReader, FrameWriter, SentCount, encode


def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


class Collector:
    """What a reader handed over, and why it ended."""

    def __init__(self) -> None:
        self.frames: list[tuple[dict[str, Any], bytes, int | None]] = []
        self.ended: list[str] = []

    def frame(self, header: dict[str, Any], body: bytes, fd: int | None) -> None:
        self.frames.append((header, body, fd))

    def end(self, reason: str) -> None:
        self.ended.append(reason)


def test_frames_and_their_descriptors_arrive_in_order_whole_and_split() -> None:
    async def main() -> None:
        a, b = pair()
        got = Collector()
        writer, reader = FrameWriter(a), FrameReader(b, got.frame, got.end)
        reader.start()
        pipes = [os.pipe() for _ in range(3)]
        big = os.urandom(3 * 1024 * 1024)  # more than the socket holds: the sender waits for the reader's thread

        def send() -> None:
            writer.send({"n": 0}, b"first", fd=pipes[0][1])
            writer.send({"n": 1})
            writer.send({"n": 2}, big, fd=pipes[1][1])
            writer.send({"n": 3}, b"", fd=pipes[2][1])

        sender = threading.Thread(target=send)
        sender.start()
        while len(got.frames) < 4:
            await asyncio.sleep(0.01)
        sender.join()
        frames = got.frames
        assert [h["n"] for h, _, _ in frames] == [0, 1, 2, 3]
        assert frames[0][1] == b"first" and frames[1][1] == b"" and frames[2][1] == big
        assert frames[1][2] is None
        # Each passed descriptor is its pipe's write end: what goes in comes out of that pipe.
        for (_, _, fd), (read_end, write_end) in zip([frames[0], frames[2], frames[3]], pipes, strict=True):
            assert fd is not None
            os.write(fd, b"x")
            assert os.read(read_end, 1) == b"x"
            for end in (fd, read_end, write_end):
                os.close(end)
        a.close()
        for _ in range(100):
            if got.ended:
                break
            await asyncio.sleep(0.01)
        assert got.ended and "closed the channel" in got.ended[0]
        b.close()

    asyncio.run(main())


def test_a_frame_cut_by_the_end_and_an_oversized_frame_end_the_channel() -> None:
    a, b = pair()
    got = Collector()
    reader = FrameReader(b, got.frame, got.end)
    a.sendall(encode({"n": 1}, b"body")[:-2])
    a.close()
    reader.settle()
    assert got.frames == [] and "mid-frame" in got.ended[0]
    b.close()
    a, b = pair()
    got = Collector()
    reader = FrameReader(b, got.frame, got.end)
    a.sendall(struct.pack(">II", 1 << 30, 0))
    reader.settle()
    assert "larger" in got.ended[0]
    a.close()
    b.close()


def test_settle_hands_over_at_once_every_frame_already_sent() -> None:
    """What orders the two processes: a frame sent before is handed over by the next settle, with no loop turn."""
    a, b = pair()
    got = Collector()
    reader = FrameReader(b, got.frame, got.end)
    writer = FrameWriter(a)
    for n in range(50):
        writer.send({"n": n}, b"x" * n)
        reader.settle()
        assert got.frames[-1][0]["n"] == n and got.frames[-1][1] == b"x" * n
    reader.settle()
    assert len(got.frames) == 50 and got.ended == []
    a.close()
    b.close()


def test_settle_new_reads_the_socket_only_when_the_other_side_counted_a_frame_since(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker settles before every request: through the count both processes map, it makes no syscall while
    nothing was sent, and still hands over at once every frame sent before (the order `settle` gives)."""
    reads: list[int] = []
    recv_fds = socket.recv_fds

    def counted(*args: Any) -> Any:
        reads.append(1)
        return recv_fds(*args)

    monkeypatch.setattr(channel.socket, "recv_fds", counted)
    a, b = pair()
    sent = SentCount.create()
    theirs = SentCount(sent.fd)  # the worker's map of the same memory (in another process there)
    os.close(sent.fd)
    got = Collector()
    reader = FrameReader(b, got.frame, got.end, theirs)
    writer = FrameWriter(a, sent)
    reader.settle_new()
    before = len(reads)
    for _ in range(20):
        reader.settle_new()
    assert len(reads) == before  # nothing sent since: no read
    for n in range(30):
        writer.send({"n": n})
        reader.settle_new()
        assert got.frames[-1][0]["n"] == n
    assert theirs.value() == 30 and len(got.frames) == 30 and got.ended == []
    a.close()
    b.close()


def test_a_frame_its_handler_cannot_take_is_logged_and_the_next_ones_still_count(
        caplog: pytest.LogCaptureFixture) -> None:
    a, b = pair()
    got = Collector()

    def picky(header: dict[str, Any], body: bytes, fd: int | None) -> None:
        if header["n"] == 1:
            raise ValueError("not this one")
        got.frame(header, body, fd)

    reader = FrameReader(b, picky, got.end)
    writer = FrameWriter(a)
    for n in range(3):
        writer.send({"n": n})
    reader.settle()
    assert [h["n"] for h, _, _ in got.frames] == [0, 2] and got.ended == []
    assert "could not be taken" in caplog.text
    a.close()
    b.close()
