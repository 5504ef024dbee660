"""Keep slow messages invisible: extend visibility before half of it has run out.

Without this, work that outlasts the visibility timeout is delivered to a second replica and
done twice. Extensions stop at SQS's 12-hour cap; such a message simply comes back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from s3convex.consumer.inflight import MAX_VISIBILITY_SECONDS, InFlightMessage
from s3convex.consumer.telemetry import heartbeat_extensions

log = logging.getLogger(__name__)


class HeldMessages(Protocol):
    """What the heartbeat keeps invisible and releases: the daemon's
    :class:`~s3convex.consumer.inflight.InFlight`, or the messages a DLQ scan holds."""

    def snapshot(self) -> list[InFlightMessage]: ...

    async def done(self, message: InFlightMessage) -> None: ...


class VisibilityHeartbeat:
    def __init__(self, sqs: Any, queue_url: str, in_flight: HeldMessages, visibility_timeout: int) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._in_flight = in_flight
        self._timeout = visibility_timeout
        self._interval = max(0.5, min(10.0, visibility_timeout / 4))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.beat()

    async def beat(self) -> None:
        now = time.monotonic()
        due = [m for m in self._in_flight.snapshot() if m.visible_until - now < self._timeout / 2]
        for start in range(0, len(due), 10):
            await self._extend(due[start : start + 10], now)

    async def _extend(self, messages: list[InFlightMessage], now: float) -> None:
        entries, by_id = [], {}
        for index, message in enumerate(messages):
            age = now - message.received_at
            timeout = int(min(self._timeout, MAX_VISIBILITY_SECONDS - age - 60))
            if timeout <= 0:
                continue
            entries.append({"Id": str(index), "ReceiptHandle": message.receipt_handle,
                            "VisibilityTimeout": timeout})
            by_id[str(index)] = (message, timeout)
        if not entries:
            return
        try:
            response = await self._sqs.change_message_visibility_batch(
                QueueUrl=self._queue_url, Entries=entries
            )
        except Exception as exc:
            # Not fatal by itself: the next beat tries again well before visibility runs out.
            log.warning("heartbeat failed", extra={"error": str(exc)})
            heartbeat_extensions.add(len(entries), {"outcome": "failed"})
            return
        heartbeat_extensions.add(len(response.get("Successful", [])), {"outcome": "ok"})
        heartbeat_extensions.add(len(response.get("Failed", [])), {"outcome": "failed"})
        for success in response.get("Successful", []):
            message, timeout = by_id[success["Id"]]
            message.visible_until = now + timeout
        for failure in response.get("Failed", []):
            log.warning("heartbeat entry failed", extra={"code": failure.get("Code"),
                                                         "message_id": by_id[failure["Id"]][0].message_id})

    async def release_all(self) -> int:
        """Make every still-unacked message visible at once, so another replica takes it."""
        messages = self._in_flight.snapshot()
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
                       for i, m in enumerate(chunk)]
            try:
                await self._sqs.change_message_visibility_batch(QueueUrl=self._queue_url, Entries=entries)
            except Exception as exc:
                log.warning("release on shutdown failed; messages return after their timeout",
                            extra={"error": str(exc)})
            for message in chunk:
                await self._in_flight.done(message)
        return len(messages)
