"""The change one event makes to one asset record — exactly what ``assets:applyEvents`` takes."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_MULTIPART_ETAG = re.compile(r"^[0-9a-fA-F]{32}-\d+$")
_MD5_ETAG = re.compile(r"^[0-9a-fA-F]{32}$")

EtagKind = Literal["md5", "multipart", "unknown"]


class Checksums(BaseModel):
    model_config = ConfigDict(frozen=True)
    sha256: str | None = None
    sha1: str | None = None
    crc32: str | None = None
    crc32c: str | None = None
    crc64nvme: str | None = None


class Encryption(BaseModel):
    model_config = ConfigDict(frozen=True)
    sse: str | None = None
    kmsKeyId: str | None = None


class Correlation(BaseModel):
    """What caused a change, kept in its history row (``convex/events.ts`` ``correlation``)."""

    model_config = ConfigDict(frozen=True)
    s3RequestId: str | None = Field(default=None, max_length=256)
    s3HostId: str | None = Field(default=None, max_length=256)
    sqsMessageId: str | None = Field(default=None, max_length=256)
    uploadRunId: str | None = Field(default=None, max_length=256)


class AssetChange(BaseModel):
    """Mirrors the Convex validator ``s3EventValidator`` in ``convex/events.ts``.

    Validated here, before it is sent, so a bad value fails one event instead of a whole
    batched mutation.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["created", "removed"]
    bucket: str = Field(min_length=1)
    key: str = Field(min_length=1, max_length=1024)
    eventName: str
    eventTime: int = Field(ge=0)
    sequencer: str | None = None
    size: int | None = Field(default=None, ge=0)
    etag: str | None = None
    etagKind: EtagKind | None = None
    versionId: str | None = None
    contentType: str | None = None
    metadata: dict[str, str] | None = None
    checksums: Checksums | None = None
    encryption: Encryption | None = None
    storageClass: str | None = None
    url: str | None = None
    urlExpiresAt: int | None = None
    # Which URL configuration made ``url`` (R8.3), e.g. "presigned:3600"; sent with every URL.
    urlConfig: str | None = Field(default=None, min_length=1, max_length=256)
    urlError: str | None = Field(default=None, max_length=1000)
    sessionId: str | None = None
    sceneId: str | None = None
    kind: str | None = None
    version: int | None = None
    source: str | None = None
    correlation: Correlation | None = None

    @field_validator("key")
    @classmethod
    def _key_fits_s3(cls, key: str) -> str:
        if len(key.encode()) > 1024:
            raise ValueError("key is longer than S3's 1,024 bytes")
        return key

    @field_validator("metadata")
    @classmethod
    def _metadata_keys_are_convex_fields(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        # Convex object keys must be printable ASCII not starting with "$"; S3 metadata names
        # are HTTP header names, so anything else did not come from S3 and is dropped.
        if metadata is None:
            return None
        return {k: v for k, v in metadata.items() if k.isascii() and k.isprintable() and not k.startswith("$")}

    def to_convex(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def etag_kind(etag: str | None, sse: str | None = None) -> EtagKind | None:
    """A multipart ETag (``md5-of-part-md5s-N``) is never the object's MD5; under SSE-KMS
    (or SSE-C) even a single-part ETag is not an MD5 of the content."""
    if not etag:
        return None
    if _MULTIPART_ETAG.match(etag):
        return "multipart"
    if _MD5_ETAG.match(etag) and sse in (None, "AES256"):
        return "md5"
    return "unknown"
