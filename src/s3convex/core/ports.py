"""The ports handlers see: what S3 holds for a key, and the URL a reader uses.

Handlers depend on these Protocols only; :mod:`s3convex.adapters` implements them (HeadObject
through aiobotocore or the signed fast path, public or presigned URLs), and unit tests pass
tiny fakes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from s3convex.core.asset import Checksums, Encryption


@dataclass(frozen=True, slots=True)
class ObjectHead:
    """What HeadObject says S3 holds now."""

    size: int
    etag: str
    content_type: str | None = None
    version_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    checksums: Checksums | None = None
    encryption: Encryption | None = None
    storage_class: str | None = None


class ObjectStore(Protocol):
    async def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectHead | None:
        """The object's current metadata, or None when it no longer exists."""
        ...


@dataclass(frozen=True, slots=True)
class SignedUrl:
    """A URL for a reader, and which URL configuration made it."""

    url: str
    expires_at_ms: int | None  # None: a URL that does not expire (a public base)
    # The configuration's name, stored on the asset as ``urlConfig`` (R8.3): "public:<base>" or
    # "presigned:<S3_PRESIGN_EXPIRES>". A public URL that fell back to presigned carries the
    # presigned one. It names how URLs are made, not one URL's lifetime (``expires_at_ms``).
    config: str

    def stored_fields(self) -> dict[str, str | int]:
        """The asset fields Convex stores for it: ``url``, ``urlConfig`` and, if it expires,
        ``urlExpiresAt``."""
        fields: dict[str, str | int] = {"url": self.url, "urlConfig": self.config}
        if self.expires_at_ms is not None:
            fields["urlExpiresAt"] = self.expires_at_ms
        return fields


class UrlSource(Protocol):
    @property
    def config(self) -> str:
        """The name of this source's configuration: what every record's ``urlConfig`` should
        be once the refresher has brought it in line (a fallback's URLs carry their own)."""
        ...

    async def url_for(self, bucket: str, key: str, *, expires_in: int | None = None) -> SignedUrl:
        """The URL to store or hand out; ``expires_in`` (s): a presigned URL lives that long
        instead of the configured lifetime (a public URL does not expire either way)."""
        ...
