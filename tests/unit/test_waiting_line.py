"""A deployment's waiting line: who is served next when a slot comes free."""

from __future__ import annotations

import asyncio

from jupyter_modeldeploy.gateway.waiting_line import PRIORITY_CLASSES, WaitingLine

INTERACTIVE, BATCH = PRIORITY_CLASSES["interactive"], PRIORITY_CLASSES["batch"]


def served_order(line: WaitingLine) -> list[str]:
    order: list[str] = []
    while (turn := line.next_turn()) is not None:
        order.append(turn.key_id)
    return order


def run(test):  # type: ignore[no-untyped-def]
    """Turns carry futures: each test builds its line inside a running loop."""
    return asyncio.run(test())


def test_a_flooding_key_waits_behind_itself_and_a_newcomer_is_next() -> None:
    async def test() -> None:
        line = WaitingLine()
        for _ in range(5):
            line.join("flood", INTERACTIVE, lambda: None)
        first = line.next_turn()
        assert first is not None and first.key_id == "flood"
        line.join("quiet", INTERACTIVE, lambda: None)  # joins while the flood's second request waits
        assert served_order(line) == ["quiet", "flood", "flood", "flood", "flood"]
    run(test)


def test_busy_keys_take_turns() -> None:
    async def test() -> None:
        line = WaitingLine()
        for key in ("a", "a", "a", "b", "b", "b", "c"):
            line.join(key, INTERACTIVE, lambda: None)
        assert served_order(line) == ["a", "b", "c", "a", "b", "a", "b"]
        assert line.depth == 0
    run(test)


def test_interactive_keys_go_before_batch_keys_whenever_they_joined() -> None:
    async def test() -> None:
        line = WaitingLine()
        for _ in range(3):
            line.join("batch", BATCH, lambda: None)
        line.join("chat", INTERACTIVE, lambda: None)
        assert served_order(line) == ["chat", "batch", "batch", "batch"]
    run(test)


def test_a_turn_that_left_is_never_served_and_grant_takes_slots_while_free() -> None:
    async def test() -> None:
        line = WaitingLine()
        started: list[str] = []
        turns = [line.join(key, INTERACTIVE, lambda key=key: started.append(key)) for key in ("a", "b", "c")]
        assert line.leave(turns[1]) and not line.leave(turns[1])
        slots = {"free": 1}

        def free() -> bool:
            if slots["free"] == 0:
                return False
            slots["free"] -= 1
            return True

        line.grant(free)
        assert started == ["a"] and turns[0].granted.done() and not turns[2].granted.done()
        slots["free"] = 5
        line.grant(free)
        assert started == ["a", "c"] and line.depth == 0 and line.served == 2
    run(test)
