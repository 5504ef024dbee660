"""Message shapes exactly as AWS (and MinIO) send them, and the one internal event they become.

Envelope models mirror the documented JSON; anything that does not validate is poison, decided
in :mod:`s3convex.consumer.decode`. The pipeline after decoding only sees :class:`ObjectEvent`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# --- S3 event notification (AWS user guide: "Event message structure"), also MinIO's -------


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class S3Bucket(_Shape):
    name: str = Field(min_length=1)
    arn: str | None = None


class S3Object(_Shape):
    key: str = Field(min_length=1)
    size: int | None = Field(default=None, ge=0)
    eTag: str | None = None
    versionId: str | None = None
    sequencer: str | None = None
    # MinIO adds these beside the AWS fields.
    contentType: str | None = None
    userMetadata: dict[str, str] | None = None


class S3Entity(_Shape):
    bucket: S3Bucket
    object: S3Object


class S3EventRecord(_Shape):
    eventVersion: str = Field(pattern=r"^2\.\d+$")  # any 2.x; a new major is a new shape
    eventSource: Literal["aws:s3", "minio:s3"]
    eventTime: datetime
    eventName: str = Field(min_length=1)
    awsRegion: str | None = None
    s3: S3Entity
    responseElements: dict[str, Any] | None = None


class S3Notification(_Shape):
    Records: list[S3EventRecord] = Field(min_length=1)


class S3TestEvent(_Shape):
    """Sent once when a notification configuration is written; carries no object."""

    Service: Literal["Amazon S3"]
    Event: Literal["s3:TestEvent"]
    Bucket: str
    Time: datetime | None = None
    RequestId: str | None = None
    HostId: str | None = None


# --- Envelopes around it ----------------------------------------------------------------------


class SnsNotification(_Shape):
    """SNS fan-out without raw delivery: the S3 document is a JSON string in ``Message``."""

    Type: Literal["Notification"]
    Message: str
    MessageId: str | None = None
    TopicArn: str | None = None


class EventBridgeObject(_Shape):
    key: str = Field(min_length=1)
    size: int | None = Field(default=None, ge=0)
    etag: str | None = None
    sequencer: str | None = None
    version_id: str | None = Field(default=None, alias="version-id")


class EventBridgeDetail(_Shape):
    bucket: S3Bucket
    object: EventBridgeObject
    reason: str | None = None
    deletion_type: str | None = Field(default=None, alias="deletion-type")
    request_id: str | None = Field(default=None, alias="request-id")


class EventBridgeEvent(_Shape):
    detail_type: Literal["Object Created", "Object Deleted"] = Field(alias="detail-type")
    source: Literal["aws.s3"]
    time: datetime
    detail: EventBridgeDetail
    id: str | None = None


# --- What the pipeline works with ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ObjectEvent:
    """One change of one object, whatever envelope it came in. Keys are already decoded;
    ``event_name`` is AWS's (``ObjectCreated:Put``…) with MinIO's ``s3:`` prefix removed.
    What the event means for an asset is the handlers' business (:mod:`s3convex.handlers`)."""

    event_name: str
    bucket: str
    key: str
    event_time_ms: int
    sequencer: str | None = None
    size: int | None = None
    etag: str | None = None
    version_id: str | None = None
    source: str = "aws:s3"
    request_id: str | None = None
    host_id: str | None = None
    content_type: str | None = None
    user_metadata: dict[str, str] = field(default_factory=dict)
