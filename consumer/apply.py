"""Apply asset changes in Convex: one ``assets:applyEvents`` mutation per batch.

A Convex outage is retried *in place*: the batch's messages stay in flight (the visibility
heartbeat keeps them hidden, and the full in-flight bound stops receiving), so an outage costs
no SQS receive count and loses nothing; only past ``hold_seconds`` is it handed back to the
message as a retryable error. This hold is the only retry of the mutation: each try is one
attempt of the Convex client (:data:`~s3convex.core.retrying.ONE_ATTEMPT`), whatever budget the
client was made with. A function error on a batch is bisected to the events that cause
it, so one bad event fails one message, not its neighbours.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from s3convex.adapters.convex import ConvexClient
from s3convex.consumer.telemetry import event_lag, events_applied, flush_duration
from s3convex.core.asset import AssetChange
from s3convex.core.errors import ConvexFunctionError, SyncError
from s3convex.core.retrying import ONE_ATTEMPT, RetryBudget, with_retries

log = logging.getLogger(__name__)

APPLY_EVENTS = "assets:applyEvents"
# convex/events.ts MAX_BATCH_EVENTS: keeps one mutation inside Convex's limits.
MAX_EVENTS_PER_MUTATION = 800

Status = Literal["applied", "stale", "duplicate", "error"]
COMMITTED: frozenset[str] = frozenset({"applied", "stale", "duplicate"})


@dataclass(frozen=True, slots=True)
class ApplyResult:
    status: Status
    reason: str | None = None

    @property
    def committed(self) -> bool:
        return self.status in COMMITTED


class ConvexApplier:
    def __init__(
        self,
        convex: ConvexClient,
        *,
        hold_seconds: float = 900.0,
        backoff_base: float = 0.25,
        backoff_cap: float = 10.0,
    ) -> None:
        self._convex = convex
        # No limit on attempts: the batch is tried every 5–10 s once backed off, until no try
        # may start later than ``hold_seconds`` after the first failure.
        self._hold = RetryBudget(attempts=None, seconds=hold_seconds, base=backoff_base, cap=backoff_cap)

    async def apply(self, changes: Sequence[AssetChange]) -> list[ApplyResult]:
        if len(changes) > MAX_EVENTS_PER_MUTATION:
            half = len(changes) // 2
            return [*await self.apply(changes[:half]), *await self.apply(changes[half:])]
        started = time.monotonic()
        try:
            raw = await self._mutate_until_available(changes)
        except ConvexFunctionError as exc:
            if len(changes) == 1:
                events_applied.add(1, {"status": "error"})
                return [ApplyResult("error", f"Convex rejected the event: {exc.error_message}")]
            half = len(changes) // 2
            return [*await self.apply(changes[:half]), *await self.apply(changes[half:])]
        results = [ApplyResult(item["status"], item.get("reason")) for item in raw]
        elapsed_ms = (time.monotonic() - started) * 1000
        committed_at_ms = time.time() * 1000
        counts = Counter(result.status for result in results)
        for status, count in counts.items():
            events_applied.add(count, {"status": status})
        flush_duration.record(elapsed_ms)
        for change, result in zip(changes, results, strict=True):
            if result.status == "applied":
                event_lag.record(max(0.0, committed_at_ms - change.eventTime))
        log.info("flush", extra={"events": len(changes), **counts, "ms": round(elapsed_ms, 1)})
        return results

    async def _mutate_until_available(self, changes: Sequence[AssetChange]) -> list[dict]:
        payload = {"events": [change.to_convex() for change in changes]}

        def holding(attempt: int, delay: float, error: SyncError) -> None:
            log.warning("convex unavailable, holding batch", extra={
                "events": len(changes), "attempt": attempt, "retry_in_s": round(delay, 2),
                "error": str(error)})

        raw = await with_retries(
            functools.partial(self._convex.mutation, APPLY_EVENTS, payload, retry=ONE_ATTEMPT),
            self._hold, on_retry=holding)
        if not isinstance(raw, list) or len(raw) != len(changes):
            raise ConvexFunctionError(APPLY_EVENTS, f"expected {len(changes)} results, got {raw!r:.200}")
        return raw
