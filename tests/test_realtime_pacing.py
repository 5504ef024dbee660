"""Latency on the real-time path: the batcher flushes once nothing more is on its way to it
(consumer/batching.py, ``flush_when_idle``), yet keeps a steady flow batched.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from s3convex.consumer.batching import MicroBatcher


async def test_idle_batch_flushes_once_nothing_is_on_its_way() -> None:
    flushed: list[tuple[float, list[int]]] = []

    async def flush(items: Any) -> list[int]:
        flushed.append((time.monotonic(), list(items)))
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(flush, max_size=100, max_wait=1.0, max_concurrent=1,
                                                   flush_when_idle=True)
    runner = asyncio.create_task(batcher.run())
    started = time.monotonic()
    with batcher.expecting():
        first = batcher.add(1)
        await asyncio.sleep(0.05)
        assert not first.done()  # an item is still on its way: the batch waits for it
        second = batcher.add(2)
    assert await asyncio.gather(first, second) == [1, 2]
    assert [items for _, items in flushed] == [[1, 2]]
    assert flushed[0][0] - started < 0.3  # not max_wait (1 s)
    await batcher.close()
    await runner


async def test_idle_flushes_are_still_max_wait_apart() -> None:
    flushed: list[float] = []

    async def flush(items: Any) -> list[int]:
        flushed.append(time.monotonic())
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(flush, max_size=100, max_wait=0.2, max_concurrent=4,
                                                   flush_when_idle=True)
    runner = asyncio.create_task(batcher.run())
    assert await batcher.submit(1) == 1  # after a quiet spell: at once
    assert await batcher.submit(2) == 2  # right after a flush: not before max_wait
    assert flushed[1] - flushed[0] >= 0.19
    await batcher.close()
    await runner


async def test_without_flush_when_idle_a_batch_lingers_max_wait() -> None:
    flushed: list[float] = []

    async def flush(items: Any) -> list[int]:
        flushed.append(time.monotonic())
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(flush, max_size=100, max_wait=0.2, max_concurrent=1)
    runner = asyncio.create_task(batcher.run())
    started = time.monotonic()
    with batcher.expecting():
        pending = batcher.add(1)
    assert await pending == 1
    assert flushed[0] - started >= 0.19
    await batcher.close()
    await runner
