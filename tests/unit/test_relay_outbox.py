"""The worker's reports: batched, sent at the end of the loop's turn when they move a quota book, at once when the
server acts on them; and a reader's `Sync` is answered only after every report made before it."""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_modeldeploy.gateway.relay.outbox import Outbox
from jupyter_modeldeploy.gateway.relay.plane import DataPlane, WorkerSettings
from jupyter_modeldeploy.gateway.relay.protocol import Message, Started, Synced, Wake, encode


def _outbox(every_s: float = 0.05, batch: int = 256) -> tuple[Outbox, list[list[Message]]]:
    frames: list[list[Message]] = []
    return Outbox(frames.append, every_s=every_s, batch=batch), frames


def test_reports_wait_for_the_batch_then_go_in_one_frame() -> None:
    async def scenario() -> list[list[Message]]:
        outbox, frames = _outbox(every_s=0.05)
        outbox.put(Started("a"))
        outbox.put(Started("b"))
        await asyncio.sleep(0.01)
        assert frames == []  # not before the batch's time
        await asyncio.sleep(0.08)
        return frames

    assert asyncio.run(scenario()) == [[Started("a"), Started("b")]]


def test_a_full_batch_goes_at_once() -> None:
    async def scenario() -> list[list[Message]]:
        outbox, frames = _outbox(every_s=10, batch=3)
        for name in "abc":
            outbox.put(Started(name))
        return frames

    assert asyncio.run(scenario()) == [[Started("a"), Started("b"), Started("c")]]


def test_a_quota_count_goes_when_the_turn_ends_and_a_wake_at_once_after_what_came_before() -> None:
    async def scenario() -> list[list[Message]]:
        outbox, frames = _outbox(every_s=10)
        outbox.put(Started("a"))
        outbox.put(Started("b", book="k-1"), soon=True)
        assert frames == []
        await asyncio.sleep(0)
        assert frames == [[Started("a"), Started("b", book="k-1")]]
        outbox.put(Started("c"))
        outbox.put(Wake("c"), now=True)
        return frames

    assert asyncio.run(scenario())[1] == [Started("c"), Wake("c")]


class _Host:
    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


def test_a_sync_returns_only_once_its_own_synced_came(monkeypatch: Any) -> None:
    """Two readers: the first one's `Synced` does not release the second (reports made between the two `Sync`s
    would be missed); the worker going away releases every reader."""

    async def scenario() -> list[str]:
        plane = DataPlane(_Host(), WorkerSettings())  # type: ignore[arg-type]
        sent: list[Message] = []
        monkeypatch.setattr(DataPlane, "serving", property(lambda self: True))
        monkeypatch.setattr(plane, "_send", lambda message, fd=None: sent.append(message))
        order: list[str] = []

        async def reader(name: str) -> None:
            await plane.sync()
            order.append(name)

        first = asyncio.ensure_future(reader("first"))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(reader("second"))
        await asyncio.sleep(0)
        assert [m.number for m in sent] == [1, 2]  # type: ignore[union-attr]
        frame = encode(Synced(1))
        plane._frame(frame.header, frame.body, None)
        await asyncio.sleep(0.01)
        assert order == ["first"]
        plane._writer = object()  # type: ignore[assignment]  # as if running: its loss ends the wait
        plane._lost("gone", kill=False)
        await asyncio.wait_for(asyncio.gather(first, second), 1)
        return order

    assert asyncio.run(scenario()) == ["first", "second"]

