"""The frames between the server and its stream relay worker: order, descriptors, splits, ends."""

from __future__ import annotations

import asyncio
import os
import socket
import struct

import pytest

from jupyter_modeldeploy.gateway.relay.channel import ChannelError, FrameReader, FrameWriter, encode


def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def test_frames_and_their_descriptors_arrive_in_order_whole_and_split() -> None:
    async def main() -> None:
        a, b = pair()
        writer, reader = FrameWriter(a), FrameReader(b)
        pipes = [os.pipe() for _ in range(3)]
        big = os.urandom(3 * 1024 * 1024)  # several receives, while the writer waits for room
        sending = asyncio.ensure_future(asyncio.gather(
            writer.send({"n": 0}, b"first", fd=pipes[0][1]),
            writer.send({"n": 1}),
            writer.send({"n": 2}, big, fd=pipes[1][1]),
            writer.send({"n": 3}, b"", fd=pipes[2][1]),
        ))
        got = [await reader.read() for _ in range(4)]
        await sending
        assert [h["n"] for h, _, _ in got] == [0, 1, 2, 3]
        assert got[0][1] == b"first" and got[1][1] == b"" and got[2][1] == big
        assert got[1][2] is None
        # Each passed descriptor is its pipe's write end: what goes in comes out of that pipe.
        for (_, _, fd), (read_end, write_end) in zip([got[0], got[2], got[3]], pipes, strict=True):
            assert fd is not None
            os.write(fd, b"x")
            assert os.read(read_end, 1) == b"x"
            for end in (fd, read_end, write_end):
                os.close(end)
        a.close()
        with pytest.raises(ChannelError, match="closed the channel"):
            await reader.read()
        reader.close()
        b.close()

    asyncio.run(main())


def test_a_frame_cut_by_the_end_and_an_oversized_frame_are_channel_errors() -> None:
    async def main() -> None:
        a, b = pair()
        reader = FrameReader(b)
        a.sendall(encode({"n": 1}, b"body")[:-2])
        a.close()
        with pytest.raises(ChannelError, match="mid-frame"):
            await reader.read()
        reader.close()
        b.close()
        a, b = pair()
        reader = FrameReader(b)
        a.sendall(struct.pack(">II", 1 << 30, 0))
        with pytest.raises(ChannelError, match="larger"):
            await reader.read()
        reader.close()
        a.close()
        b.close()

    asyncio.run(main())


def test_frames_sent_before_the_reader_first_waits_are_read() -> None:
    async def main() -> None:
        a, b = pair()
        a.sendall(encode({"n": 1}) + encode({"n": 2}, b"two"))
        reader = FrameReader(b)
        assert (await reader.read())[0]["n"] == 1
        header, body, _ = await reader.read()
        assert header["n"] == 2 and body == b"two"
        reader.close()
        a.close()
        b.close()

    asyncio.run(main())
