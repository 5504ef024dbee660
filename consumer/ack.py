"""The end of a message's path: delete it, release it for a retry, or dead-letter it.

Deleting happens in exactly one place (:meth:`Acknowledger._delete_batch`, through
:func:`~s3convex.adapters.sqs_batch.delete_batch`, the one DeleteMessageBatch), and only after
every record of the message committed in Convex. A dead-lettered message is first *sent* to
the DLQ with its reason, then deleted — a crash between the two duplicates, never drops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from s3convex.adapters.sqs_batch import delete_batch
from s3convex.consumer.batching import MicroBatcher
from s3convex.consumer.inflight import InFlight, InFlightMessage
from s3convex.consumer.telemetry import (
    SQS,
    messages_finished,
    note_dead_letter,
    operation_duration,
)

log = logging.getLogger(__name__)

REASON_ATTRIBUTE = "s3convex.failure-reason"
SOURCE_ID_ATTRIBUTE = "s3convex.source-message-id"
RECEIVES_ATTRIBUTE = "s3convex.receive-count"
FAILED_AT_ATTRIBUTE = "s3convex.failed-at"
_MAX_ATTRIBUTES = 10  # SQS allows at most 10 message attributes per message


class Acknowledger:
    def __init__(self, sqs: Any, queue_url: str, dlq_url: str, in_flight: InFlight, *,
                 delete_wait: float = 0.1) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._dlq_url = dlq_url
        self._in_flight = in_flight
        self.deletes: MicroBatcher[InFlightMessage, bool] = MicroBatcher(
            self._delete_batch, max_size=10, max_wait=delete_wait, max_concurrent=8
        )

    async def delete(self, message: InFlightMessage, *, outcome: str = "deleted") -> None:
        try:
            await self.deletes.submit(message)
            messages_finished.add(1, {"outcome": outcome})
        finally:
            await self._in_flight.done(message)

    async def release(self, message: InFlightMessage, delay_seconds: int, reason: str) -> None:
        """Make the message visible again after ``delay_seconds`` (0 = at once)."""
        try:
            await self._sqs.change_message_visibility(
                QueueUrl=self._queue_url,
                ReceiptHandle=message.receipt_handle,
                VisibilityTimeout=delay_seconds,
            )
            messages_finished.add(1, {"outcome": "released"})
            log.info("released", extra={"delay_s": delay_seconds, "reason": reason,
                                        "receive_count": message.receive_count})
        except Exception as exc:
            # The message comes back on its own when its visibility timeout runs out.
            log.warning("release failed", extra={"error": str(exc)})
        finally:
            await self._in_flight.done(message)

    async def dead_letter(self, message: InFlightMessage, reason: str) -> str | None:
        """Send to the DLQ, then delete; the DLQ's message id, or None if the send failed."""
        attributes = _dlq_attributes(message, reason)
        started = time.monotonic()
        try:
            sent = await self._sqs.send_message(
                QueueUrl=self._dlq_url, MessageBody=message.body, MessageAttributes=attributes
            )
        except Exception as exc:
            operation_duration.record(time.monotonic() - started, {
                **SQS, "messaging.operation.name": "send", "error.type": type(exc).__name__})
            log.error("dead-letter send failed; message will be retried",
                      extra={"error": str(exc)})
            await self._in_flight.done(message)
            return None
        operation_duration.record(time.monotonic() - started, {**SQS, "messaging.operation.name": "send"})
        note_dead_letter(reason)
        dlq_message_id = sent.get("MessageId") if isinstance(sent, dict) else None
        log.warning("dead-lettered", extra={"reason": reason, "receive_count": message.receive_count,
                                            "dlq_message_id": dlq_message_id})
        await self.delete(message, outcome="dead_lettered")
        return dlq_message_id

    async def _delete_batch(self, messages: Sequence[InFlightMessage]) -> list[bool]:
        return await delete_batch(self._sqs, self._queue_url, [m.receipt_handle for m in messages],
                                  message_ids=[m.message_id for m in messages])


def _dlq_attributes(message: InFlightMessage, reason: str) -> dict[str, Any]:
    ours = {
        REASON_ATTRIBUTE: reason[:1000],
        SOURCE_ID_ATTRIBUTE: message.message_id,
        RECEIVES_ATTRIBUTE: str(message.receive_count),
        FAILED_AT_ATTRIBUTE: datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    kept = {
        name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        for name, value in message.message_attributes.items()
        if name not in ours  # a replayed message keeps its s3convex.replay-count
    }
    kept = dict(list(kept.items())[: _MAX_ATTRIBUTES - len(ours)])
    return {**kept, **{k: {"DataType": "String", "StringValue": v} for k, v in ours.items()}}
