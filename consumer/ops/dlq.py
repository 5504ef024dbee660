"""The dead-letter queue, read without losing anything: what a message is, what selects it,
and a scanner that looks at every message once and puts it back.

Looking at an SQS message means receiving it, which hides it. :class:`DlqScanner` receives
with a visibility timeout, keeps what it holds hidden with the consumer's own
:class:`~consumer.heartbeat.VisibilityHeartbeat` (so a long scan never sees a message twice and
no other reader grabs one mid-look), and on exit makes everything it still holds visible again
at once. A scan only adds one to each message's ``ApproximateReceiveCount`` on the DLQ, which
has no redrive policy of its own.

What a DLQ message carries (set by :mod:`consumer.ack` when the consumer dead-letters it):
``s3convex.failure-reason``, ``s3convex.source-message-id``, ``s3convex.receive-count``,
``s3convex.failed-at``; a message moved by SQS's own redrive (maxReceiveCount) has none of
them, only ``DeadLetterQueueSourceArn`` on AWS and LocalStack. Replays add
``s3convex.replay-count``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from consumer.ack import (
    FAILED_AT_ATTRIBUTE,
    REASON_ATTRIBUTE,
    RECEIVES_ATTRIBUTE,
    SOURCE_ID_ATTRIBUTE,
)
from consumer.aws import map_aws_error
from consumer.decode import Decoder
from consumer.errors import PoisonMessage
from consumer.heartbeat import VisibilityHeartbeat
from consumer.inflight import InFlightMessage

log = logging.getLogger(__name__)

REPLAY_COUNT_ATTRIBUTE = "s3convex.replay-count"
SQS_MAX_ATTRIBUTES = 10
SQS_MAX_BATCH_BYTES = 256 * 1024
# SQS refuses more in-flight messages than this per standard queue (~120,000).
DEFAULT_MAX_HELD = 100_000
# When attributes must make room for the replay count, ours go first, least useful first.
_DROPPABLE = (FAILED_AT_ATTRIBUTE, RECEIVES_ATTRIBUTE, SOURCE_ID_ATTRIBUTE, REASON_ATTRIBUTE)
_SYSTEM_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp", "DeadLetterQueueSourceArn"]


Described = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], str | None]


@dataclass(slots=True)
class DlqMessage:
    """One DLQ message as an operator sees it. ``keys``/``events`` come from decoding the body
    with the consumer's own decoder (on first use: an unfiltered replay never decodes);
    ``decode_error`` says why that failed."""

    message_id: str
    body: str
    message_attributes: dict[str, Any]
    sent_at_ms: int | None
    dlq_receive_count: int
    source_arn: str | None
    receipt_handle: str = field(default="", repr=False, compare=False)
    _described: Described | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_sqs(cls, raw: dict[str, Any]) -> DlqMessage:
        system = raw.get("Attributes") or {}
        sent = system.get("SentTimestamp")
        return cls(
            message_id=raw["MessageId"],
            body=raw.get("Body", ""),
            message_attributes=clean_attributes(raw.get("MessageAttributes") or {}),
            sent_at_ms=int(sent) if sent else None,
            dlq_receive_count=int(system.get("ApproximateReceiveCount", "1")),
            source_arn=system.get("DeadLetterQueueSourceArn"),
            receipt_handle=raw["ReceiptHandle"],
        )

    def _describe(self) -> Described:
        if self._described is None:
            self._described = describe_body(self.body)
        return self._described

    @property
    def buckets(self) -> tuple[str, ...]:
        return self._describe()[0]

    @property
    def keys(self) -> tuple[str, ...]:
        return self._describe()[1]

    @property
    def events(self) -> tuple[str, ...]:
        return self._describe()[2]

    @property
    def decode_error(self) -> str | None:
        return self._describe()[3]

    def _attribute(self, name: str) -> str | None:
        value = self.message_attributes.get(name)
        return value.get("StringValue") if isinstance(value, dict) else None

    @property
    def reason(self) -> str | None:
        return self._attribute(REASON_ATTRIBUTE)

    @property
    def source_message_id(self) -> str | None:
        return self._attribute(SOURCE_ID_ATTRIBUTE)

    @property
    def failed_receive_count(self) -> int | None:
        """Receives on the source queue before it was dead-lettered (the consumer's count)."""
        value = self._attribute(RECEIVES_ATTRIBUTE)
        return int(value) if value and value.isdigit() else None

    @property
    def failed_at(self) -> str | None:
        return self._attribute(FAILED_AT_ATTRIBUTE)

    @property
    def replay_count(self) -> int:
        value = self._attribute(REPLAY_COUNT_ATTRIBUTE)
        return int(value) if value and value.isdigit() else 0

    def age_seconds(self, now_ms: int) -> float | None:
        return None if self.sent_at_ms is None else max(0.0, (now_ms - self.sent_at_ms) / 1000)

    def summary(self, now_ms: int) -> dict[str, Any]:
        """Everything but the body: what ``list --json`` prints."""
        return {
            "messageId": self.message_id,
            "sourceMessageId": self.source_message_id,
            "ageSeconds": self.age_seconds(now_ms),
            "sentAt": self.sent_at_ms,
            "receiveCount": self.failed_receive_count,
            "dlqReceiveCount": self.dlq_receive_count,
            "replayCount": self.replay_count,
            "buckets": list(self.buckets),
            "keys": list(self.keys),
            "events": list(self.events),
            "reason": self.reason,
            "failedAt": self.failed_at,
            "decodeError": self.decode_error,
            "sourceArn": self.source_arn,
        }

    def to_export(self, now_ms: int) -> dict[str, Any]:
        """One JSONL line of ``export``: ``body`` and ``messageAttributes`` are what ``import``
        sends (edit them); ``messageId`` says which DLQ message the line replaces; the rest is
        for reading and is ignored by ``import``."""
        return {
            "messageId": self.message_id,
            "body": self.body,
            "messageAttributes": attributes_to_json(self.message_attributes),
            **{k: v for k, v in self.summary(now_ms).items() if k != "messageId"},
        }


@dataclass(frozen=True, slots=True)
class Selection:
    """Which messages an operation touches. Filters of different kinds must all match; several
    values of one kind match if any does. No filter selects everything.

    - ``keys``: globs (``fnmatch``, ``*`` crosses ``/``) against the decoded object keys;
    - ``events``: globs against event names (``ObjectCreated:*``);
    - ``reasons``: case-insensitive substrings of the failure reason;
    - ``message_ids``: the DLQ message id or the original (source) message id;
    - ``older_than_s`` / ``newer_than_s``: age since the message entered the DLQ.
    """

    keys: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    message_ids: tuple[str, ...] = ()
    older_than_s: float | None = None
    newer_than_s: float | None = None

    def matches(self, message: DlqMessage, now_ms: int) -> bool:
        if self.keys and not any(fnmatchcase(k, g) for k in message.keys for g in self.keys):
            return False
        if self.events and not any(fnmatchcase(e, g) for e in message.events for g in self.events):
            return False
        if self.reasons:
            reason = (message.reason or "").lower()
            if not any(r.lower() in reason for r in self.reasons):
                return False
        if self.message_ids and not {message.message_id, message.source_message_id} & set(self.message_ids):
            return False
        age = message.age_seconds(now_ms)
        if self.older_than_s is not None and (age is None or age < self.older_than_s):
            return False
        return not (self.newer_than_s is not None and (age is None or age > self.newer_than_s))

    def to_audit(self) -> dict[str, Any]:
        """The filters as stored in the ``replayRuns`` audit row (absent = not used)."""
        out: dict[str, Any] = {
            "keys": list(self.keys), "events": list(self.events), "reasons": list(self.reasons),
            "messageIds": list(self.message_ids),
            "olderThanSeconds": self.older_than_s, "newerThanSeconds": self.newer_than_s,
        }
        return {k: v for k, v in out.items() if v not in (None, [])}


def describe_body(body: str) -> Described:
    """(buckets, keys, event names, decode error) of a message body.

    Decoded by the consumer's own :class:`~consumer.decode.Decoder`, told to accept every
    bucket the body names, so a message dead-lettered for its bucket still shows its keys.
    """
    buckets = _buckets_named(body)
    try:
        decoded = Decoder(buckets).decode(body)
    except PoisonMessage as exc:
        return tuple(sorted(buckets)), (), (), exc.reason
    if decoded.is_test_event:
        return tuple(sorted(buckets)), (), ("s3:TestEvent",), None
    return (
        tuple(sorted({e.bucket for e in decoded.events})),
        tuple(e.key for e in decoded.events),
        tuple(dict.fromkeys(e.event_name for e in decoded.events)),
        None,
    )


def _buckets_named(body: str) -> set[str]:
    try:
        document = json.loads(body)
    except (ValueError, TypeError):
        return set()
    if isinstance(document, dict) and document.get("Type") == "Notification":
        try:
            document = json.loads(document.get("Message") or "")
        except (ValueError, TypeError):
            return set()
    if not isinstance(document, dict):
        return set()
    found: set[str] = set()
    for record in document.get("Records") or []:
        with contextlib.suppress(AttributeError, TypeError):
            found.add(record["s3"]["bucket"]["name"])
    with contextlib.suppress(AttributeError, TypeError, KeyError):
        found.add(document["detail"]["bucket"]["name"])
    if isinstance(document.get("Bucket"), str):
        found.add(document["Bucket"])
    return {name for name in found if isinstance(name, str)}


# --- message attributes ----------------------------------------------------------------------

def clean_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """Keep only what SendMessage accepts (ReceiveMessage adds empty list fields)."""
    return {
        name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        for name, value in attributes.items()
        if isinstance(value, dict)
    }


def attributes_to_json(attributes: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in attributes.items():
        value = dict(value)
        if isinstance(value.get("BinaryValue"), bytes | bytearray):
            value["BinaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
        out[name] = value
    return out


def attributes_from_json(attributes: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in attributes.items():
        if not isinstance(value, dict) or not isinstance(value.get("DataType"), str):
            raise ValueError(f"attribute {name!r} needs a DataType")
        value = {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        if "BinaryValue" in value:
            value["BinaryValue"] = base64.b64decode(value["BinaryValue"], validate=True)
        elif not isinstance(value.get("StringValue"), str):
            raise ValueError(f"attribute {name!r} needs a StringValue or BinaryValue")
        out[name] = value
    return out


def with_replay_count(attributes: dict[str, Any]) -> dict[str, Any]:
    """The attributes a replayed message carries: all it had, ``s3convex.replay-count`` + 1.

    SQS allows 10 attributes; when the message already has 10, the consumer's diagnostic
    attributes make room, least useful first (failed-at, then receive-count, ...). A message
    carrying 10 attributes of someone else's keeps them all and gets no count.
    """
    current = attributes.get(REPLAY_COUNT_ATTRIBUTE, {}).get("StringValue", "0")
    count = (int(current) if str(current).isdigit() else 0) + 1
    kept = {k: v for k, v in attributes.items() if k != REPLAY_COUNT_ATTRIBUTE}
    for name in _DROPPABLE:
        if len(kept) < SQS_MAX_ATTRIBUTES:
            break
        kept.pop(name, None)
    if len(kept) >= SQS_MAX_ATTRIBUTES:
        log.warning("no room for the replay count attribute", extra={"attributes": sorted(kept)})
        return kept
    return {**kept, REPLAY_COUNT_ATTRIBUTE: {"DataType": "Number", "StringValue": str(count)}}


def entry_bytes(body: str, attributes: dict[str, Any]) -> int:
    """The size SQS counts against its message and batch limits."""
    size = len(body.encode())
    for name, value in attributes.items():
        size += len(name.encode()) + len(str(value.get("DataType", "")).encode())
        if "BinaryValue" in value:
            size += len(value["BinaryValue"])
        else:
            size += len(str(value.get("StringValue", "")).encode())
    return size


def size_batches(items: list[Any], size_of: Any, *, max_count: int = 10,
                 max_bytes: int = SQS_MAX_BATCH_BYTES) -> list[list[Any]]:
    """Split into SendMessageBatch-sized groups (≤ 10 entries, ≤ 256 KiB in all)."""
    batches: list[list[Any]] = []
    current: list[Any] = []
    used = 0
    for item in items:
        size = size_of(item)
        if current and (len(current) >= max_count or used + size > max_bytes):
            batches.append(current)
            current, used = [], 0
        current.append(item)
        used += size
    if current:
        batches.append(current)
    return batches


# --- sending and deleting ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to send: ``ref`` is the caller's handle on it (a DlqMessage, a file line)."""

    ref: Any
    body: str
    attributes: dict[str, Any]


async def send_batch(sqs: Any, queue_url: str, items: list[Outgoing]) -> list[str | None]:
    """SendMessageBatch; the new message id of each item, or None where SQS refused it.

    A failure of the whole call raises (mapped): the caller stops before deleting anything.
    """
    entries = [{"Id": str(i), "MessageBody": item.body,
                **({"MessageAttributes": item.attributes} if item.attributes else {})}
               for i, item in enumerate(items)]
    try:
        response = await sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    except Exception as exc:
        raise map_aws_error(exc, "SendMessageBatch") from exc
    ids: list[str | None] = [None] * len(items)
    for success in response.get("Successful", []):
        ids[int(success["Id"])] = success["MessageId"]
    for failure in response.get("Failed", []):
        log.warning("send entry refused", extra={"code": failure.get("Code"),
                                                 "error": failure.get("Message")})
    return ids


async def delete_batch(sqs: Any, queue_url: str, receipt_handles: list[str]) -> list[bool]:
    """DeleteMessageBatch; which deletes succeeded. Never raises: an undeleted message only
    comes back and is sent again (a duplicate, which applying absorbs)."""
    entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(receipt_handles)]
    try:
        response = await sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
    except Exception as exc:
        log.warning("delete batch failed; the messages stay and may be sent again",
                    extra={"error": str(map_aws_error(exc, "DeleteMessageBatch"))})
        return [False] * len(entries)
    ok = [True] * len(entries)
    for failure in response.get("Failed", []):
        ok[int(failure["Id"])] = False
        log.warning("delete entry failed; the message stays and may be sent again",
                    extra={"code": failure.get("Code")})
    return ok


# --- the scanner -------------------------------------------------------------------------------

class _Held:
    """What a scan holds hidden, in the shape :class:`VisibilityHeartbeat` reads
    (``snapshot`` and ``done``, as :class:`~consumer.inflight.InFlight` has them)."""

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
        self._heartbeat = VisibilityHeartbeat(sqs, queue_url, self._held, visibility_timeout)  # type: ignore[arg-type]
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
            try:
                response = await self._sqs.receive_message(
                    QueueUrl=self._url, MaxNumberOfMessages=10, WaitTimeSeconds=self._wait,
                    VisibilityTimeout=self._visibility, AttributeNames=_SYSTEM_ATTRIBUTES,
                    MessageSystemAttributeNames=_SYSTEM_ATTRIBUTES, MessageAttributeNames=["All"],
                )
            except Exception as exc:
                raise map_aws_error(exc, "ReceiveMessage") from exc
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
        results: list[bool] = []
        for start in range(0, len(handles), 10):
            results += await delete_batch(self._sqs, self._url, handles[start:start + 10])
        return results


async def queue_depth(sqs: Any, queue_url: str) -> dict[str, int]:
    """Visible, in-flight and delayed message counts (approximate, as SQS reports them)."""
    try:
        response = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed"])
    except Exception as exc:
        raise map_aws_error(exc, "GetQueueAttributes") from exc
    attributes = response.get("Attributes", {})
    return {
        "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
        "inFlight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        "delayed": int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
    }
