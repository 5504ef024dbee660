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


class UrlSource(Protocol):
    async def url_for(self, bucket: str, key: str) -> tuple[str, int | None]:
        """``(url, expires_at_ms)``; ``expires_at_ms`` is None for a URL that does not expire."""
        ...
