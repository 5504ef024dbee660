"""Long-poll SQS for messages, never holding more than the in-flight bound allows."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from s3convex.adapters.aws import map_aws_error
from s3convex.consumer.inflight import InFlight, InFlightMessage
from s3convex.consumer.telemetry import messages_received
from s3convex.core.backoff import backoff_delay
from s3convex.core.errors import RetryableError

log = logging.getLogger(__name__)

_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp", "ApproximateFirstReceiveTimestamp"]


class Receiver:
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        in_flight: InFlight,
        *,
        wait_seconds: int,
        visibility_timeout: int,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._in_flight = in_flight
        self._wait_seconds = wait_seconds
        self._visibility_timeout = visibility_timeout
        self.empty_receives = 0  # consecutive receives that returned nothing, all pollers

    async def poll(self, deliver: Callable[[InFlightMessage], None], stop: asyncio.Event) -> None:
        """One poller: receive → hand each message to ``deliver`` → repeat until ``stop``."""
        failures = 0
        while not stop.is_set():
            wanted = await self._in_flight.reserve(10)
            if stop.is_set():
                await self._in_flight.unreserve(wanted)
                return
            try:
                response = await self._sqs.receive_message(
                    QueueUrl=self._queue_url,
                    MaxNumberOfMessages=wanted,
                    WaitTimeSeconds=self._wait_seconds,
                    AttributeNames=_ATTRIBUTES,
                    MessageSystemAttributeNames=_ATTRIBUTES,
                    MessageAttributeNames=["All"],
                )
            except Exception as exc:
                await self._in_flight.unreserve(wanted)
                error = map_aws_error(exc, "ReceiveMessage")
                if not isinstance(error, RetryableError):
                    raise error from exc  # e.g. the queue is gone: stop loudly
                failures += 1
                delay = backoff_delay(failures, base=0.5, cap=20.0)
                log.warning("receive failed", extra={"error": str(error), "retry_in_s": round(delay, 2)})
                await asyncio.sleep(delay)
                continue
            failures = 0
            messages = response.get("Messages", [])
            await self._in_flight.unreserve(wanted - len(messages))
            self.empty_receives = 0 if messages else self.empty_receives + 1
            if messages:
                messages_received.add(len(messages))
            for raw in messages:
                message = InFlightMessage.from_sqs(raw, self._visibility_timeout)
                self._in_flight.add(message)
                deliver(message)
