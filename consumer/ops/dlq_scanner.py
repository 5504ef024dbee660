"""Read a queue without losing anything: a scanner that looks at every message once and puts it back.

Looking at an SQS message means receiving it, which hides it. :class:`DlqScanner` receives
with a visibility timeout, keeps what it holds hidden with the consumer's own
:class:`~s3convex.consumer.heartbeat.VisibilityHeartbeat` (so a long scan never sees a message twice and
no other reader grabs one mid-look), and on exit makes everything it still holds visible again
at once. A scan only adds one to each message's ``ApproximateReceiveCount`` on the DLQ, which
has no redrive policy of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from s3convex.adapters.sqs_batch import delete_batch
from s3convex.consumer.heartbeat import VisibilityHeartbeat
from s3convex.consumer.inflight import InFlightMessage
from s3convex.consumer.ops.dlq import DlqMessage

log = logging.getLogger(__name__)

# SQS refuses more in-flight messages than this per standard queue (~120,000).
DEFAULT_MAX_HELD = 100_000
_SYSTEM_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp", "DeadLetterQueueSourceArn"]


class _Held:
    """What a scan holds hidden, in the shape :class:`VisibilityHeartbeat` reads
    (``snapshot`` and ``done``, as :class:`~s3convex.consumer.inflight.InFlight` has them)."""

    def __init__(self) -> None:
        self._by_handle: dict[str, InFlightMessage] = {}

    def hold(self, message: InFlightMessage) -> None:
        self._by_handle[message.receipt_handle] = message

    def drop(self, message: InFlightMessage) -> None:
        self._by_handle.pop(message.receipt_handle, None)

    def snapshot(self) -> list[InFlightMessage]:
        return list(self._by_handle.values())

    async def done(self, message: InFlightMessage) -> None:
        self.drop(message)

    def __len__(self) -> int:
        return len(self._by_handle)


class DlqScanner:
    """Receive each visible message of a queue once and hold it until released.

    ``async with DlqScanner(sqs, url) as scan:`` then ``await scan.receive()`` until it returns
    ``None`` (the queue has nothing more to give). Messages sent to the queue after the scan
    began are held but never returned, so a replay cannot chase its own failures. Whatever is
    still held on exit is made visible again at once.
    """

    def __init__(self, sqs: Any, queue_url: str, *, visibility_timeout: int = 60,
                 wait_seconds: int = 1, empty_receives_to_stop: int = 2,
                 max_held: int = DEFAULT_MAX_HELD) -> None:
        self._sqs = sqs
        self._url = queue_url
        self._visibility = visibility_timeout
        self._wait = wait_seconds
        self._empty_to_stop = empty_receives_to_stop
        self._held = _Held()
        self._max_held = max_held
        self._heartbeat = VisibilityHeartbeat(sqs, queue_url, self._held, visibility_timeout)
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._handles: dict[str, InFlightMessage] = {}  # message id → its newest handle
        self._empty = 0
        self.started_ms = int(time.time() * 1000)
        self.seen = 0
        self.newer = 0  # arrived after the scan began: held, never returned
        self.truncated = False  # stopped because max_held messages were held

    async def __aenter__(self) -> DlqScanner:
        self.started_ms = int(time.time() * 1000)
        self._heartbeat_task = asyncio.create_task(self._heartbeat.run(), name="dlq-heartbeat")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._heartbeat_task
        released = await asyncio.shield(self._heartbeat.release_all())
        if released:
            log.info("released held messages", extra={"count": released})

    @property
    def held(self) -> int:
        return len(self._held)

    async def receive(self) -> list[DlqMessage] | None:
        """The next messages not seen before (possibly none), or None when the queue has
        nothing more to give (``empty_receives_to_stop`` empty receives in a row)."""
        while self._empty < self._empty_to_stop:
            if len(self._held) >= self._max_held:
                self.truncated = True
                return None
            response = await self._sqs.receive_message(
                QueueUrl=self._url, MaxNumberOfMessages=10, WaitTimeSeconds=self._wait,
                VisibilityTimeout=self._visibility, AttributeNames=_SYSTEM_ATTRIBUTES,
                MessageSystemAttributeNames=_SYSTEM_ATTRIBUTES, MessageAttributeNames=["All"],
            )
            raws = response.get("Messages", [])
            self._empty = 0 if raws else self._empty + 1
            if raws:
                return [m for m in (self._hold(raw) for raw in raws) if m is not None]
        return None

    def _hold(self, raw: dict[str, Any]) -> DlqMessage | None:
        message_id = raw["MessageId"]
        now = time.monotonic()
        # The heartbeat needs only the handle and timings; the body is not kept twice.
        handle = InFlightMessage(message_id=message_id, receipt_handle=raw["ReceiptHandle"],
                                 body="", attributes={}, message_attributes={},
                                 received_at=now, visible_until=now + self._visibility)
        previous = self._handles.get(message_id)
        if previous is not None:
            # Received again (a hold lapsed, or a delete failed): only the newest handle works.
            self._held.drop(previous)
        self._held.hold(handle)
        self._handles[message_id] = handle
        sent = (raw.get("Attributes") or {}).get("SentTimestamp")
        if sent and int(sent) > self.started_ms:
            self.newer += previous is None
            return None
        self.seen += previous is None
        return DlqMessage.from_sqs(raw)

    def handle_of(self, message: DlqMessage) -> str:
        handle = self._handles.get(message.message_id)
        return handle.receipt_handle if handle is not None else message.receipt_handle

    async def delete(self, messages: list[DlqMessage]) -> list[bool]:
        """Delete from the queue (and stop holding first, so the heartbeat leaves them be)."""
        handles = [self.handle_of(m) for m in messages]
        for message in messages:
            handle = self._handles.get(message.message_id)
            if handle is not None:
                self._held.drop(handle)
        return await delete_batch(self._sqs, self._url, handles,
                                  message_ids=[m.message_id for m in messages])
