"""Pacing for the operator tools: hold sends to an average rate (``--rate 50/s``).

:func:`next_slot` is the pure arithmetic — when the next send may go — and :class:`RateLimiter`
applies it with an injectable clock and sleep, shared by every worker of a replay or import so
the rate holds whatever the batch sizes and however many workers send.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


def next_slot(next_free: float, now: float, count: int, interval: float) -> tuple[float, float]:
    """(seconds to wait, new next_free) for sending ``count`` messages at one per ``interval``.

    Pure: a send goes at ``max(now, next_free)`` and pushes the next one ``count × interval``
    later, so the average rate holds whatever the batch sizes and however many workers share it.
    """
    start = max(now, next_free)
    return start - now, start + count * interval


class RateLimiter:
    def __init__(self, per_second: float | None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._clock = clock
        self._sleep = sleep

    async def acquire(self, count: int) -> None:
        if not self._interval:
            return
        wait, self._next = next_slot(self._next, self._clock(), count, self._interval)
        if wait > 0:
            await self._sleep(wait)
