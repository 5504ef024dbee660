"""Decode an SQS message body into object events — or classify it as poison, never raise else.

Accepted shapes (golden examples in ``tests/fixtures/events``):

- a direct S3 notification, any 2.x ``eventVersion``, one or more ``Records``;
- the same wrapped by SNS (``{"Type": "Notification", "Message": "<json>"}``) or sent raw;
- EventBridge ``Object Created`` / ``Object Deleted``;
- MinIO's records (``s3:`` prefixed names, ``minio:s3`` source, ``%2F`` in keys);
- ``s3:TestEvent``, which S3 sends when notifications are configured: decoded as no events.

Keys arrive form-URL-encoded and are decoded with ``unquote_plus``. Anything else raises
:class:`~s3convex.core.errors.PoisonMessage` with a reason that ends up on the DLQ copy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import unquote_plus

from pydantic import BaseModel, ValidationError

from s3convex.core.errors import PoisonMessage
from s3convex.core.events import (
    EventBridgeEvent,
    ObjectEvent,
    S3EventRecord,
    S3Notification,
    S3TestEvent,
    SnsNotification,
)

M = TypeVar("M", bound=BaseModel)
_HEX = re.compile(r"^[0-9A-Fa-f]{1,64}$")
_MAX_REASON = 300


@dataclass(frozen=True, slots=True)
class Decoded:
    events: tuple[ObjectEvent, ...]
    is_test_event: bool = False


class Decoder:
    """``Decoder(buckets={"video-assets"}).decode(body)`` → :class:`Decoded` or PoisonMessage."""

    def __init__(self, buckets: Collection[str]) -> None:
        self._buckets = frozenset(buckets)

    def decode(self, body: str) -> Decoded:
        try:
            document = json.loads(body)
        except (ValueError, TypeError) as exc:
            raise PoisonMessage(f"body is not JSON: {exc}") from None
        return self._decode_document(document, depth=0)

    def _decode_document(self, document: Any, *, depth: int) -> Decoded:
        if not isinstance(document, dict):
            raise PoisonMessage(f"body is JSON {type(document).__name__}, not an object")
        if "Records" in document:
            notification = _parse(S3Notification, document, "S3 notification")
            return Decoded(tuple(self._from_record(record) for record in notification.Records))
        if document.get("Event") == "s3:TestEvent":
            test = _parse(S3TestEvent, document, "s3:TestEvent")
            self._check_bucket(test.Bucket)
            return Decoded((), is_test_event=True)
        if document.get("Type") == "Notification" and depth == 0:
            sns = _parse(SnsNotification, document, "SNS notification")
            try:
                inner = json.loads(sns.Message)
            except ValueError as exc:
                raise PoisonMessage(f"SNS Message is not JSON: {exc}") from None
            return self._decode_document(inner, depth=depth + 1)
        if document.get("source") == "aws.s3" and "detail-type" in document:
            return Decoded((self._from_eventbridge(_parse(EventBridgeEvent, document, "EventBridge event")),))
        raise PoisonMessage(f"unrecognised message shape (top-level keys: {sorted(document)[:8]})")

    def _from_record(self, record: S3EventRecord) -> ObjectEvent:
        bucket = record.s3.bucket.name
        self._check_bucket(bucket)
        obj = record.s3.object
        minio = record.eventSource == "minio:s3"
        response = record.responseElements or {}
        return ObjectEvent(
            event_name=record.eventName.removeprefix("s3:"),
            bucket=bucket,
            key=_decode_key(obj.key),
            event_time_ms=_ms(record.eventTime),
            # A MinIO cluster's sequencers are not comparable across nodes: order by time.
            sequencer=None if minio else _sequencer(obj.sequencer),
            size=obj.size,
            etag=_etag(obj.eTag),
            version_id=obj.versionId or None,
            source=record.eventSource,
            request_id=_str_or_none(response.get("x-amz-request-id")),
            host_id=_str_or_none(response.get("x-amz-id-2")),
            content_type=obj.contentType,
            user_metadata=dict(obj.userMetadata or {}),
        )

    def _from_eventbridge(self, event: EventBridgeEvent) -> ObjectEvent:
        detail = event.detail
        self._check_bucket(detail.bucket.name)
        if event.detail_type == "Object Created":
            name = "ObjectCreated:" + (detail.reason or "Put").replace("PutObject", "Put")
        elif detail.deletion_type == "Delete Marker Created":
            name = "ObjectRemoved:DeleteMarkerCreated"
        else:
            name = "ObjectRemoved:Delete"
        return ObjectEvent(
            event_name=name,
            bucket=detail.bucket.name,
            key=_decode_key(detail.object.key),
            event_time_ms=_ms(event.time),
            sequencer=_sequencer(detail.object.sequencer),
            size=detail.object.size,
            etag=_etag(detail.object.etag),
            version_id=detail.object.version_id or None,
            source="aws.s3:eventbridge",
            request_id=detail.request_id,
        )

    def _check_bucket(self, bucket: str) -> None:
        if bucket not in self._buckets:
            raise PoisonMessage(f"bucket {bucket!r} is not configured here")


def _parse(model: type[M], document: dict[str, Any], what: str) -> M:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '<root>'}: {error['msg']}"
            for error in exc.errors()[:3]
        )
        raise PoisonMessage(f"invalid {what}: {problems}"[:_MAX_REASON]) from None


def _decode_key(raw: str) -> str:
    key = unquote_plus(raw)
    if not key:
        raise PoisonMessage("object key is empty after URL-decoding")
    return key


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise PoisonMessage("event time has no time zone")
    return int(moment.timestamp() * 1000)


def _sequencer(value: str | None) -> str | None:
    """S3's sequencer is hex; keep it upper-cased for comparison, drop anything else."""
    return value.upper() if value and _HEX.match(value) else None


def _etag(value: str | None) -> str | None:
    return value.strip('"') if value else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
