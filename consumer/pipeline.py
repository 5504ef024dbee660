"""One message's whole path: decode → dispatch → apply → ack. The daemon runs one per message."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from s3convex.consumer.ack import Acknowledger
from s3convex.consumer.apply import ApplyResult
from s3convex.consumer.batching import MicroBatcher
from s3convex.consumer.decode import Decoder
from s3convex.consumer.dispatch import Dispatcher
from s3convex.consumer.inflight import InFlightMessage
from s3convex.consumer.logs import log_context
from s3convex.consumer.retry import RetryPolicy, decide
from s3convex.consumer.telemetry import SQS, process_duration
from s3convex.consumer.tracing import DeadLetterRecords, correlate, mark_error, message_span, tracer
from s3convex.core.asset import AssetChange
from s3convex.core.errors import PermanentError
from s3convex.core.events import ObjectEvent

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    decoder: Decoder
    dispatcher: Dispatcher
    changes: MicroBatcher[AssetChange, ApplyResult]
    acknowledger: Acknowledger
    retry_policy: RetryPolicy
    # Where dead letters are recorded for `s3convex trace` (consumer/tracing.py); None: nowhere.
    dead_letter_records: DeadLetterRecords | None = None
    queue_name: str = "queue"

    async def process(self, message: InFlightMessage) -> None:
        started = time.monotonic()
        events: list[ObjectEvent] = []
        outcome = "deleted"
        with (log_context(message_id=message.message_id),
              message_span(message.message_id, self.queue_name, message.receive_count) as span):
            try:
                await self._apply(message, events)
            except asyncio.CancelledError:
                outcome = "released"
                raise  # shutdown: the daemon releases whatever is still in flight
            except Exception as exc:
                mark_error(span, exc)
                decision = decide(exc, message.receive_count, self.retry_policy)
                with tracer.start_as_current_span("ack", attributes={"s3convex.action": decision.action}):
                    if decision.action == "dead_letter":
                        outcome = "dead_lettered"
                        await self._dead_letter(message, decision.reason, events)
                    else:
                        outcome = "released"
                        await self.acknowledger.release(message, decision.delay_seconds, decision.reason)
            else:
                with tracer.start_as_current_span("ack", attributes={"s3convex.action": "delete"}):
                    await self.acknowledger.delete(message)
            finally:
                span.set_attribute("s3convex.outcome", outcome)
                process_duration.record(time.monotonic() - started, {
                    **SQS, "messaging.operation.name": "process", "s3convex.outcome": outcome})

    async def _dead_letter(self, message: InFlightMessage, reason: str, events: list[ObjectEvent]) -> None:
        dlq_message_id = await self.acknowledger.dead_letter(message, reason)
        if dlq_message_id is not None and self.dead_letter_records is not None:
            await self.dead_letter_records.record(
                body=message.body, message_id=message.message_id, dlq_message_id=dlq_message_id,
                reason=reason, receive_count=message.receive_count, events=events)

    async def _apply(self, message: InFlightMessage, events: list[ObjectEvent]) -> None:
        decoded = self.decoder.decode(message.body)
        if decoded.is_test_event:
            log.info("s3:TestEvent acknowledged")
            return
        events.extend(decoded.events)
        # Announced to the batcher until its changes are queued: while a message is being
        # dispatched, the batch it will join may wait for it (MicroBatcher.expecting).
        with self.changes.expecting():
            with tracer.start_as_current_span("dispatch", attributes={"s3convex.events": len(events)}):
                changes = await asyncio.gather(*(self.dispatcher.dispatch(e) for e in decoded.events))
            changes = [correlate(c, e, message.message_id) for c, e in zip(changes, decoded.events, strict=True)]
            queued = [self.changes.add(change) for change in changes]
        with tracer.start_as_current_span("apply") as span:
            results = await asyncio.gather(*queued)
            commits = sorted({r.commit for r in results if r.commit})
            span.set_attribute("s3convex.commits", commits)
        rejected = [(c, r) for c, r in zip(changes, results, strict=True) if not r.committed]
        if rejected:
            change, result = rejected[0]
            raise PermanentError(f"{change.key}: {result.reason or result.status}")
