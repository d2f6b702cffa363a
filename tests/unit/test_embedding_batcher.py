"""Batch packing (pure) and the per-model queue."""

from __future__ import annotations

import asyncio

import pytest

from jupyter_modeldeploy.engines.embedding_server.batcher import BatchQueue, Entry, pack_batch, padded_tokens


def test_padded_tokens_counts_rows_times_longest() -> None:
    assert padded_tokens([]) == 0
    assert padded_tokens([3, 10, 5]) == 30


def test_empty_queue_packs_nothing() -> None:
    assert pack_batch([], 100, 10) == 0


def test_request_limit() -> None:
    assert pack_batch([1] * 50, 10_000, 8) == 8


def test_token_limit_uses_padded_size() -> None:
    # 4 rows of up to 10 tokens = 40 padded tokens; a fifth row of 10 would make 50.
    assert pack_batch([10, 2, 10, 3, 10], 40, 100) == 4
    # A long row later raises the padded size of everything before it.
    assert pack_batch([2, 2, 2, 30], 60, 100) == 3


def test_first_entry_always_goes_even_when_too_long() -> None:
    assert pack_batch([500, 1], 100, 10) == 1


def test_order_is_kept() -> None:
    assert pack_batch([1, 1, 100, 1], 50, 10) == 2


@pytest.mark.parametrize("lengths", [[5] * 7, [1, 9, 3, 7, 2, 8], [16, 1, 1, 1, 16]])
def test_packed_batches_respect_limits(lengths: list[int]) -> None:
    rest = list(lengths)
    while rest:
        n = pack_batch(rest, 24, 3)
        assert 1 <= n <= 3
        assert n == 1 or padded_tokens(rest[:n]) <= 24
        rest = rest[n:]


async def test_queue_hands_out_fitting_batches_and_skips_abandoned_entries() -> None:
    loop = asyncio.get_running_loop()
    queue = BatchQueue(max_batch_tokens=20, max_batch_requests=3)
    entries = [Entry(i, tokens, loop.create_future()) for i, tokens in enumerate([5, 5, 5, 5, 5])]
    entries[0].future.cancel()
    for entry in entries:
        queue.put(entry)
    first = await queue.next_batch()
    assert [e.features for e in first] == [1, 2, 3]
    second = await queue.next_batch()
    assert [e.features for e in second] == [4]
    assert len(queue) == 0


async def test_consumer_waits_for_an_entry() -> None:
    loop = asyncio.get_running_loop()
    queue = BatchQueue(100, 10)
    task = asyncio.create_task(queue.next_batch())
    await asyncio.sleep(0)
    assert not task.done()
    queue.put(Entry("x", 3, loop.create_future()))
    batch = await asyncio.wait_for(task, 5)
    assert [e.features for e in batch] == ["x"]
