"""What the MinIO bridge does with one webhook body: check it, then put it on the queue.

MinIO's webhook target posts ``{"EventName", "Key", "Records": [<one S3-shaped record>]}``
(``Key`` is ``<bucket>/<unescaped key>``). :meth:`Forwarder.forward` asks the daemon's own
:class:`~s3convex.consumer.decode.Decoder` — and its handler registry — whether the daemon could
ever use it, and then:

- **it could**: ``{"Records": [...]}``, the records exactly as MinIO wrote them, goes to the
  notification queue — the shape S3 itself sends, so MinIO's events get the daemon's ordering,
  retries, DLQ and replay. Bodies of concurrent requests share SendMessageBatch calls (≤ 10
  entries, ≤ 256 KiB, :class:`~s3convex.consumer.batching.MicroBatcher`); the result is known
  only once SQS accepted the entry, and a refusal raises, so nothing is answered "done" early;
- **it never could** (not JSON, not a notification, another bucket, a ``Key`` naming another
  object than its record, an event no handler takes): the body as received goes to the DLQ with
  the reason the daemon would have given (:func:`~s3convex.consumer.retry.decide`) and the
  daemon's DLQ attributes (:mod:`s3convex.consumer.ack`), so ``s3convex replay list`` shows it;
- ``s3:TestEvent``: nothing to do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from s3convex.adapters.sqs_batch import (
    SQS_MAX_BATCH_BYTES,
    SQS_MAX_BATCH_ENTRIES,
    Outgoing,
    entry_bytes,
    send_batch,
    size_batches,
)
from s3convex.consumer.ack import (
    FAILED_AT_ATTRIBUTE,
    REASON_ATTRIBUTE,
    RECEIVES_ATTRIBUTE,
    SOURCE_ID_ATTRIBUTE,
)
from s3convex.consumer.batching import MicroBatcher
from s3convex.consumer.decode import Decoded, Decoder
from s3convex.consumer.retry import RetryPolicy, decide
from s3convex.consumer.telemetry import SQS, bridge_dead_letters, operation_duration, sent_messages
from s3convex.core.errors import PoisonMessage, StorageUnavailable, SyncError
from s3convex.handlers.registry import HandlerRegistry

log = logging.getLogger(__name__)

# What SQS accepts in a message body (its documented character set); anything else is replaced
# so a poison body can always be dead-lettered instead of being refused (and retried forever).
_NOT_SQS_TEXT = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one body: ``queued`` (SQS's message id), ``dead_lettered`` (why), or
    ``ignored`` (an ``s3:TestEvent``)."""

    status: Literal["queued", "dead_lettered", "ignored"]
    message_id: str | None = None
    reason: str | None = None
    keys: tuple[str, ...] = field(default=())


class _Refused(Exception):
    """A poison body and the stage of :meth:`Forwarder._check` that refused it: the low-cardinality
    ``reason`` of ``s3convex.bridge.dead_letters`` (the full reason goes to the DLQ message)."""

    def __init__(self, stage: str, error: PoisonMessage) -> None:
        super().__init__(str(error))
        self.stage = stage
        self.error = error


class Forwarder:
    """``await Forwarder(sqs, queue_url, dlq_url, decoder, registry).forward(body)``.

    Run :attr:`sends` (``await forwarder.sends.run()``) as a supervised task; ``sqs`` is a
    client of :func:`~s3convex.adapters.aws.open_clients`, whose errors are mapped already.
    """

    def __init__(self, sqs: Any, queue_url: str, dlq_url: str, decoder: Decoder,
                 registry: HandlerRegistry, *, linger: float = 0.01, max_concurrent_sends: int = 16) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._dlq_url = dlq_url
        self._decoder = decoder
        self._registry = registry
        self._send_attributes = {**SQS, "messaging.operation.name": "send",
                                 "messaging.destination.name": queue_url.rstrip("/").rsplit("/", 1)[-1]}
        # Counts since start for the one summary line when the bridge stops (the metrics carry
        # them while it runs): queued / send_calls is how well concurrent posts share batches.
        self.stats = {"queued": 0, "send_calls": 0, "dead_lettered": 0, "ignored": 0}
        self.sends: MicroBatcher[str, str | SyncError] = MicroBatcher(
            self._send, max_size=SQS_MAX_BATCH_ENTRIES, max_wait=linger,
            max_concurrent=max_concurrent_sends)

    async def forward(self, raw: bytes) -> Outcome:
        """Queue the body, or dead-letter it if it can never be handled. Raises a
        :class:`~s3convex.core.errors.SyncError` when SQS did not take it (answer 5xx)."""
        try:
            body, decoded = self._check(raw)
        except _Refused as refused:
            return await self._dead_letter(raw, refused.error, refused.stage)
        keys = tuple(f"{event.bucket}/{event.key}" for event in decoded.events)
        if decoded.is_test_event:
            self.stats["ignored"] += 1
            return Outcome("ignored")
        result = await self.sends.submit(body)
        if isinstance(result, SyncError):
            raise result
        self.stats["queued"] += 1
        return Outcome("queued", message_id=result, keys=keys)

    def _check(self, raw: bytes) -> tuple[str, Decoded]:
        """The SQS body to send and what the daemon will decode from it — that very body.
        Raises :class:`_Refused` naming the stage that found the body poison."""
        stage = "not_json"
        try:
            try:
                text = raw.decode("utf-8")
                document = json.loads(text)
            except (UnicodeDecodeError, ValueError) as exc:
                raise PoisonMessage(f"body is not JSON: {exc}"[:300]) from None
            body = json.dumps(document) if _NOT_SQS_TEXT.search(text) else text  # ASCII escapes SQS takes
            if isinstance(document, dict) and isinstance(document.get("Records"), list):
                stage = "too_large"
                # EventName and Key are MinIO's envelope: the daemon reads S3's own shape.
                body = _sqs_body({"Records": document["Records"]})
            stage = "undecodable"
            decoded = self._decoder.decode(body)
            stage = "no_handler"
            for event in decoded.events:
                self._registry.resolve(event)  # the daemon's own verdict: no handler is poison
            stage = "key_mismatch"
            named = document.get("Key") if isinstance(document, dict) else None
            if named is not None and named not in {f"{e.bucket}/{e.key}" for e in decoded.events}:
                raise PoisonMessage(f"Key {str(named)[:200]!r} names no object of its Records")
        except PoisonMessage as exc:
            raise _Refused(stage, exc) from None
        return body, decoded

    async def _send(self, bodies: Sequence[str]) -> list[str | SyncError]:
        """One flush of the batcher: SendMessageBatch per ≤ 256 KiB group, concurrently; each
        body's message id, or the error that kept SQS from taking it."""
        entries = [Outgoing(index, body, {}) for index, body in enumerate(bodies)]
        groups = size_batches(entries, lambda entry: entry_bytes(entry.body, entry.attributes))
        self.stats["send_calls"] += len(groups)
        answers = await asyncio.gather(*(self._send_group(group) for group in groups), return_exceptions=True)
        results: list[str | SyncError] = [StorageUnavailable("not sent")] * len(bodies)
        for group, answer in zip(groups, answers, strict=True):
            for position, entry in enumerate(group):
                results[entry.ref] = _result(answer, position)
        return results

    async def _send_group(self, group: list[Outgoing]) -> list[str | None]:
        """One SendMessageBatch, timed (``messaging.client.operation.duration``, with
        ``error.type`` when it raised); the entries SQS accepted are counted as sent."""
        started = time.monotonic()
        attributes = dict(self._send_attributes)
        try:
            answer = await send_batch(self._sqs, self._queue_url, group)
        except Exception as exc:
            attributes["error.type"] = type(exc).__name__
            raise
        finally:
            operation_duration.record(time.monotonic() - started, attributes)
        sent_messages.add(sum(1 for message_id in answer if message_id is not None), self._send_attributes)
        return answer

    async def _dead_letter(self, raw: bytes, error: PoisonMessage, stage: str) -> Outcome:
        reason = decide(error, 0, RetryPolicy()).reason  # "poison: …", as the daemon writes it
        source_id = f"minio-bridge:{uuid.uuid4()}"
        attributes = {name: {"DataType": "String", "StringValue": value} for name, value in {
            REASON_ATTRIBUTE: reason[:1000],
            SOURCE_ID_ATTRIBUTE: source_id,
            RECEIVES_ATTRIBUTE: "0",  # never received from the queue: the bridge refused it
            FAILED_AT_ATTRIBUTE: datetime.now(UTC).isoformat(timespec="milliseconds"),
        }.items()}
        body = _NOT_SQS_TEXT.sub("\ufffd", raw.decode("utf-8", errors="replace")) or "(empty body)"
        await self._sqs.send_message(QueueUrl=self._dlq_url, MessageBody=body,
                                     MessageAttributes=attributes)
        self.stats["dead_lettered"] += 1
        bridge_dead_letters.add(1, {"reason": stage})
        log.warning("webhook body dead-lettered", extra={"reason": reason, "source_message_id": source_id})
        return Outcome("dead_lettered", reason=reason)


def _sqs_body(document: dict[str, Any]) -> str:
    """Compact JSON SQS can carry, no larger than MinIO's own body: non-ASCII kept as UTF-8
    (escaping it could triple the size past SQS's limit) unless SQS could not take the text."""
    try:
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
        body.encode()  # a lone surrogate (a "\\ud800" escape) cannot be sent as UTF-8
    except UnicodeEncodeError:
        body = json.dumps(document, separators=(",", ":"))
    if _NOT_SQS_TEXT.search(body):
        body = json.dumps(document, separators=(",", ":"))
    if len(body.encode()) > SQS_MAX_BATCH_BYTES:
        raise PoisonMessage(f"{len(body.encode())} bytes of records: more than an SQS message holds")
    return body


def _result(answer: list[str | None] | BaseException, position: int) -> str | SyncError:
    if isinstance(answer, SyncError):
        return answer
    if isinstance(answer, BaseException):
        return StorageUnavailable(f"{type(answer).__name__}: {answer}", operation="SendMessageBatch")
    message_id = answer[position]
    if message_id is None:  # SQS refused this entry (its reason is logged by send_batch)
        return StorageUnavailable("SQS refused the entry", operation="SendMessageBatch")
    return message_id
