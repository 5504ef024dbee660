"""Uploads that stopped half-way do not stay ``uploading`` forever (R6.2).

A render worker that dies mid-upload (or loses its network for good) leaves records
``uploading`` in Convex. Every ``UPLOAD_SWEEP_INTERVAL`` seconds the daemon calls
``uploads:sweepStale`` with ``olderThanMs`` = ``UPLOAD_STALE_AFTER``: records whose last accepted
progress is older become ``failed`` with ``"upload stalled"`` (convex/UPLOADS.md). The mutation
takes the oldest first, ``limit`` per call; a sweep calls it again while a call swept its whole
limit, at most :data:`MAX_CALLS_PER_SWEEP` times — ≤ 5,000 records a sweep, each call within
the limits measured in tests/convex/uploadsLimits.test.ts (500 records: 11 index ranges,
1.7 MB read, 0.9 MB / 510 docs written). The rest waits for the next sweep.

Several daemon replicas sweep alike: the mutation is serializable and a swept record is no
longer ``uploading``, so a second sweep finds nothing to do. A late report of the same attempt
is then ``stale``; the file's ``available`` (or a new attempt) still applies.

The daemon runs :meth:`UploadSweeper.run` as a supervised task. A transient Convex failure skips
a sweep; anything else ends the task, and so the daemon, loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from s3convex.adapters.convex import ConvexClient
from s3convex.core.errors import RetryableError

log = logging.getLogger(__name__)

SWEEP_STALE = "uploads:sweepStale"
SWEEP_LIMIT = 500  # records per call: convex/model/uploads.ts MAX_SWEEP
MAX_CALLS_PER_SWEEP = 10


class UploadSweeper:
    def __init__(self, convex: ConvexClient, *, stale_after_s: float, interval_s: float,
                 limit: int = SWEEP_LIMIT, max_calls: int = MAX_CALLS_PER_SWEEP) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive (UPLOAD_SWEEP_INTERVAL=0 means: no sweeper)")
        self._convex = convex
        self._stale_after_ms = int(stale_after_s * 1000)
        self._interval_s = interval_s
        self._limit = limit
        self._max_calls = max_calls

    async def sweep_once(self) -> int:
        """One sweep: the number of records turned ``failed``."""
        swept = 0
        for _ in range(self._max_calls):
            answer = await self._convex.mutation(SWEEP_STALE, {
                "olderThanMs": self._stale_after_ms, "limit": self._limit})
            count = int(answer["swept"])
            swept += count
            if count < self._limit:
                break
        return swept

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep now, then every interval, until ``stop`` is set."""
        while not stop.is_set():
            try:
                swept = await self.sweep_once()
            except RetryableError as exc:
                log.warning("stalled-upload sweep skipped", extra={"error": str(exc)})
            else:
                if swept:
                    log.warning("stalled uploads marked failed", extra={
                        "swept": swept, "stale_after_s": self._stale_after_ms / 1000})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)
