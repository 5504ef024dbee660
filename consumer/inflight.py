"""Messages received and not yet acked: the bound on them, and what the heartbeat extends."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

# SQS counts a message's visibility from its first receive and refuses to extend it past 12 h.
MAX_VISIBILITY_SECONDS = 12 * 3600


@dataclass(eq=False, slots=True)
class InFlightMessage:
    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str]
    message_attributes: dict[str, Any]
    received_at: float = field(default_factory=time.monotonic)
    visible_until: float = 0.0

    @property
    def receive_count(self) -> int:
        return int(self.attributes.get("ApproximateReceiveCount", "1"))

    @property
    def sent_at_ms(self) -> int | None:
        value = self.attributes.get("SentTimestamp")
        return int(value) if value else None

    @classmethod
    def from_sqs(cls, message: dict[str, Any], visibility_timeout: int) -> InFlightMessage:
        now = time.monotonic()
        return cls(
            message_id=message["MessageId"],
            receipt_handle=message["ReceiptHandle"],
            body=message.get("Body", ""),
            attributes=dict(message.get("Attributes") or {}),
            message_attributes=dict(message.get("MessageAttributes") or {}),
            received_at=now,
            visible_until=now + visibility_timeout,
        )


class InFlight:
    """The set of unacked messages plus a counting bound that pollers wait on (backpressure)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._reserved = 0
        self._messages: dict[str, InFlightMessage] = {}
        self._changed = asyncio.Condition()

    async def reserve(self, wanted: int) -> int:
        """Wait until at least one slot is free; reserve up to ``wanted`` of them."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._reserved < self._limit)
            granted = min(wanted, self._limit - self._reserved)
            self._reserved += granted
            return granted

    async def unreserve(self, count: int) -> None:
        if count:
            async with self._changed:
                self._reserved -= count
                self._changed.notify_all()

    def add(self, message: InFlightMessage) -> None:
        """Turn one reserved slot into a tracked message."""
        self._messages[message.receipt_handle] = message

    async def done(self, message: InFlightMessage) -> None:
        if self._messages.pop(message.receipt_handle, None) is not None:
            await self.unreserve(1)

    def __len__(self) -> int:
        return len(self._messages)

    def snapshot(self) -> list[InFlightMessage]:
        return list(self._messages.values())
