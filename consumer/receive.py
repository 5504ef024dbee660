"""Long-poll SQS for messages, never holding more than the in-flight bound allows."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from s3convex.consumer.inflight import InFlight, InFlightMessage
from s3convex.consumer.telemetry import SQS, note_received, operation_duration
from s3convex.consumer.tracing import receive_span
from s3convex.core.errors import SyncError
from s3convex.core.retrying import RetryBudget, with_retries

log = logging.getLogger(__name__)

_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp", "ApproximateFirstReceiveTimestamp"]
# A receive that failed after botocore's own attempts is asked again after 0.25–0.5 s, doubling
# to 10–20 s, for as long as the poller runs: polling has no budget to spend.
RECEIVE_RETRY = RetryBudget(attempts=None, base=0.5, cap=20.0)


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
        self._queue_name = queue_url.rstrip("/").rsplit("/", 1)[-1]

    async def poll(self, deliver: Callable[[InFlightMessage], None], stop: asyncio.Event) -> None:
        """One poller: receive → hand each message to ``deliver`` → repeat until ``stop``.

        A retryable failure is retried (:data:`RECEIVE_RETRY`); a permanent one (the queue is
        gone, access denied) ends the poller, and so the daemon, loudly.
        """
        while not stop.is_set():
            wanted = await self._in_flight.reserve(10)
            messages: list[dict[str, Any]] = []
            try:
                messages = await with_retries(functools.partial(self._receive, wanted, stop),
                                              RECEIVE_RETRY, on_retry=_log_retry)
            finally:
                await self._in_flight.unreserve(wanted - len(messages))
            self.empty_receives = 0 if messages else self.empty_receives + 1
            if messages:
                note_received(messages, self._queue_name)
            for raw in messages:
                message = InFlightMessage.from_sqs(raw, self._visibility_timeout)
                self._in_flight.add(message)
                deliver(message)

    async def _receive(self, wanted: int, stop: asyncio.Event) -> list[dict[str, Any]]:
        if stop.is_set():  # stopped while waiting (for a slot, or to try again): take nothing
            return []
        started = time.monotonic()
        started_ns = time.time_ns()
        attributes = {**SQS, "messaging.operation.name": "receive"}
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
            attributes["error.type"] = type(exc).__name__
            raise
        finally:  # a long poll's duration is mostly waiting: still what the call took
            operation_duration.record(time.monotonic() - started, attributes)
        messages = response.get("Messages", [])
        if messages:  # a span per receive that brought something; empty long polls are no news
            receive_span(self._queue_name, started_ns, [m["MessageId"] for m in messages])
        return messages


def _log_retry(attempt: int, delay: float, error: SyncError) -> None:
    log.warning("receive failed", extra={"error": str(error), "attempt": attempt,
                                         "retry_in_s": round(delay, 2)})
