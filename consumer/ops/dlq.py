"""A dead-letter queue message as an operator sees it, and the filters that select one.

:class:`DlqMessage` wraps one received DLQ message: its body, its attributes, and — decoded on
first use with the consumer's own decoder — the buckets, keys and event names it is about.
:class:`Selection` is what ``list``/``replay``/``export`` filter by. Reading the queue without
losing anything is :mod:`s3convex.consumer.ops.dlq_scanner`; attributes and the replay count are
:mod:`s3convex.consumer.ops.dlq_attributes`; SQS batch calls are :mod:`s3convex.adapters.sqs_batch`.

What a DLQ message carries (set by :mod:`s3convex.consumer.ack` when the consumer dead-letters it):
``s3convex.failure-reason``, ``s3convex.source-message-id``, ``s3convex.receive-count``,
``s3convex.failed-at``; a message moved by SQS's own redrive (maxReceiveCount) has none of
them, only ``DeadLetterQueueSourceArn`` on AWS and LocalStack. Replays add
``s3convex.replay-count``.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from s3convex.consumer.ack import (
    FAILED_AT_ATTRIBUTE,
    REASON_ATTRIBUTE,
    RECEIVES_ATTRIBUTE,
    SOURCE_ID_ATTRIBUTE,
)
from s3convex.consumer.decode import Decoder
from s3convex.consumer.ops.dlq_attributes import (
    REPLAY_COUNT_ATTRIBUTE,
    attributes_to_json,
    clean_attributes,
)
from s3convex.core.errors import PoisonMessage

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

    Decoded by the consumer's own :class:`~s3convex.consumer.decode.Decoder`, told to accept every
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
