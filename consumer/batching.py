"""Coalesce items from many concurrent callers into batches: flush at N items or T seconds.

``await batcher.submit(item)`` returns that item's own result once the batch holding it has
been flushed; an exception raised by the flush reaches every caller of that batch. At most
``max_concurrent`` flushes run at once; beyond that, items wait (and callers with them).

With ``flush_when_idle``, a batch lingers only while an item is on its way: callers announce
work that will end in a submit with :meth:`MicroBatcher.expecting`, and once none is announced
the batch cannot grow, so waiting out ``max_wait`` would only add latency — but still no
sooner than ``max_wait`` after the previous flush, so a steady flow is batched as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

FlushFn = Callable[[Sequence[T]], Awaitable[Sequence[R]]]


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        flush: FlushFn[T, R],
        *,
        max_size: int,
        max_wait: float,
        max_concurrent: int,
        flush_when_idle: bool = False,
    ) -> None:
        if max_size < 1 or max_concurrent < 1:
            raise ValueError("max_size and max_concurrent must be positive")
        self._flush = flush
        self._max_size = max_size
        self._max_wait = max_wait
        self._flush_when_idle = flush_when_idle
        self._expected = 0  # announced items not submitted yet (see expecting)
        self._last_flush_at = -math.inf
        self._slots = asyncio.Semaphore(max_concurrent)
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._oldest_at = 0.0
        self._wake = asyncio.Event()
        self._closing = False
        self._flushes: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        return await self.add(item)

    def add(self, item: T) -> asyncio.Future[R]:
        """Queue ``item`` now (no await in between) and return the future of its result."""
        if self._closing:
            raise RuntimeError("batcher is closed")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        if not self._pending:
            self._oldest_at = time.monotonic()
        self._pending.append((item, future))
        if len(self._pending) == 1 or len(self._pending) >= self._max_size:
            self._wake.set()
        return future

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        """Announce that the caller will :meth:`add` items before leaving this block."""
        self._expected += 1
        try:
            yield
        finally:
            self._expected -= 1
            if not self._expected and self._flush_when_idle and self._pending:
                self._wake.set()

    def _flush_at(self) -> float:
        """When the pending batch goes (unless it fills first): ``max_wait`` after its first
        item; with ``flush_when_idle`` and nothing on its way, as soon as the last flush is
        ``max_wait`` old — at once after a quiet spell, and never more than one flush per
        ``max_wait`` in a steady flow, where the early flushes would only multiply commits."""
        due = self._oldest_at + self._max_wait
        if not self._flush_when_idle or self._expected > 0:
            return due
        return min(due, self._last_flush_at + self._max_wait)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        """The flush loop; run it as a supervised task until :meth:`close`."""
        while not (self._closing and not self._pending):
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                flush_at = self._flush_at()
                if len(self._pending) < self._max_size and not self._closing and time.monotonic() < flush_at:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), flush_at - time.monotonic())
                    self._wake.clear()
                    continue
                await self._slots.acquire()
                batch = self._pending[: self._max_size]
                del self._pending[: self._max_size]
                self._oldest_at = self._last_flush_at = time.monotonic()
                task = asyncio.create_task(self._flush_batch(batch), name="batch-flush")
                self._flushes.add(task)
                task.add_done_callback(self._flushes.discard)

    async def close(self, grace: float | None = None) -> int:
        """Flush what is pending and wait for running flushes, then stop :meth:`run`.

        After ``grace`` seconds the flushes still running are cancelled (their callers get
        ``CancelledError``); returns how many were abandoned that way.
        """
        self._closing = True
        self._wake.set()
        deadline = None if grace is None else time.monotonic() + grace
        while self._pending or self._flushes:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return self._abandon()
            if self._flushes:
                await asyncio.wait(set(self._flushes), timeout=remaining)
            else:
                await asyncio.sleep(0.001)
        return 0

    def _abandon(self) -> int:
        abandoned = len(self._flushes)
        for task in self._flushes:
            task.cancel()
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()
        self._wake.set()
        return abandoned

    async def _flush_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._flush([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"flush returned {len(results)} results for {len(batch)} items")
        except BaseException as exc:  # every caller of this batch learns why
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._slots.release()
