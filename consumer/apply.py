"""Apply asset changes in Convex: one ``assets:applyEvents`` mutation per batch.

A Convex outage is retried *in place*: the batch's messages stay in flight (the visibility
heartbeat keeps them hidden, and the full in-flight bound stops receiving), so an outage costs
no SQS receive count and loses nothing; only past ``hold_seconds`` is it handed back to the
message as a retryable error. This hold is the only retry of the mutation: each try is one
attempt of the Convex client (:data:`~s3convex.core.retrying.ONE_ATTEMPT`), whatever budget the
client was made with. A function error on a batch is bisected to the events that cause
it, so one bad event fails one message, not its neighbours.

Each mutation has a commit id (``commit``, a fresh UUID per batch tried) that Convex keeps in
every history row it writes and that every log line of the flush names, so a log line leads to
the Convex records and back.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from s3convex.adapters.convex import ConvexClient
from s3convex.consumer.logs import log_context
from s3convex.consumer.telemetry import convex_attempts, convex_duration, events_applied, note_lag
from s3convex.consumer.tracing import tracer
from s3convex.core.asset import AssetChange
from s3convex.core.errors import ConvexFunctionError, PermanentError, SyncError
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
    commit: str | None = None  # the mutation's commit id, when it ran

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
        commit = uuid.uuid4().hex
        message_ids = sorted({c.correlation.sqsMessageId for c in changes
                              if c.correlation and c.correlation.sqsMessageId})
        started = time.monotonic()
        with (log_context(commit=commit),
              tracer.start_as_current_span(f"convex {APPLY_EVENTS}", attributes={
                  "convex.function": APPLY_EVENTS, "s3convex.commit": commit,
                  "s3convex.events": len(changes), "messaging.message.ids": message_ids})):
            try:
                raw = await self._mutate_until_available(changes, commit)
            except ConvexFunctionError as exc:
                if len(changes) == 1:
                    events_applied.add(1, {"status": "error"})
                    log.warning("event rejected", extra={"error": exc.error_message})
                    return [ApplyResult("error", f"Convex rejected the event: {exc.error_message}")]
                half = len(changes) // 2
                return [*await self.apply(changes[:half]), *await self.apply(changes[half:])]
            results = [ApplyResult(item["status"], item.get("reason"), commit) for item in raw]
            elapsed_s = time.monotonic() - started
            committed_at_ms = time.time() * 1000
            counts = Counter(result.status for result in results)
            for status, count in counts.items():
                events_applied.add(count, {"status": status})
            convex_duration.record(elapsed_s, {"convex.function": APPLY_EVENTS})
            for change, result in zip(changes, results, strict=True):
                if result.status == "applied":
                    note_lag(max(0.0, committed_at_ms - change.eventTime) / 1000)
            log.info("flush", extra={"events": len(changes), **counts, "ms": round(elapsed_s * 1000, 1)})
        return results

    async def _mutate_until_available(self, changes: Sequence[AssetChange], commit: str) -> list[dict]:
        payload = {"events": [change.to_convex() for change in changes], "commit": commit}
        attempt_outcome = {"convex.function": APPLY_EVENTS}

        async def once() -> Any:
            try:
                answer = await self._convex.mutation(APPLY_EVENTS, payload, retry=ONE_ATTEMPT)
            except PermanentError:
                convex_attempts.add(1, {**attempt_outcome, "outcome": "rejected"})
                raise
            except SyncError:
                convex_attempts.add(1, {**attempt_outcome, "outcome": "unavailable"})
                raise
            convex_attempts.add(1, {**attempt_outcome, "outcome": "ok"})
            return answer

        def holding(attempt: int, delay: float, error: SyncError) -> None:
            log.warning("convex unavailable, holding batch", extra={
                "events": len(changes), "attempt": attempt, "retry_in_s": round(delay, 2),
                "error": str(error)})

        raw = await with_retries(once, self._hold, on_retry=holding)
        if not isinstance(raw, list) or len(raw) != len(changes):
            raise ConvexFunctionError(APPLY_EVENTS, f"expected {len(changes)} results, got {raw!r:.200}")
        return raw
