"""The URL a reader uses: a public CDN URL when a base is configured, else a presigned GET.

With a public base, :class:`FallbackUrls` falls back to a presigned URL when the public one
cannot be made, so a reader still gets a working link (R1.5).
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote

from s3convex.adapters.aws import AwsClients, aws_errors
from s3convex.adapters.signed_head import SignedHead
from s3convex.core.errors import PermanentError, SyncError
from s3convex.core.ports import UrlSource
from s3convex.settings import UrlSettings

log = logging.getLogger(__name__)


def public_url(base: str, key: str) -> str:
    # Each segment percent-encoded on its own, so "/" keeps separating path segments and
    # spaces, "+", "?", "#" and non-ASCII characters survive any CDN.
    return base.rstrip("/") + "/" + "/".join(quote(segment, safe="") for segment in key.split("/"))


class PublicUrls:
    def __init__(self, base: str) -> None:
        self._base = base

    async def url_for(self, bucket: str, key: str) -> tuple[str, int | None]:
        try:
            return public_url(self._base, key), None
        except (UnicodeError, ValueError) as exc:  # a lone surrogate cannot be percent-encoded
            raise UrlError(f"public URL for {key!r}: {exc}") from exc


class UrlError(PermanentError):
    """A URL could not be made for this key (not retryable by waiting: a new key is needed)."""


class PresignedUrls:
    """Presigned GETs: signed directly when ``signed`` knows the bucket, else by the client."""

    def __init__(self, s3_client: Any, expires_in: int, signed: SignedHead | None = None) -> None:
        self._s3 = s3_client
        self._expires_in = expires_in
        self._signed = signed

    async def url_for(self, bucket: str, key: str) -> tuple[str, int | None]:
        return await self.presign(bucket, key, self._expires_in)

    async def presign(self, bucket: str, key: str, expires_in: int) -> tuple[str, int]:
        """A SigV4 GET URL living ``expires_in`` seconds, and when it expires (ms)."""
        issued = time.time()
        url = await self._signed.presign_get(bucket, key, expires_in) if self._signed else None
        if url is None:
            with aws_errors(f"presign GetObject {bucket}/{key}"):  # signing only: no request
                url = await self._s3.generate_presigned_url(
                    "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_in
                )
        return url, int((issued + expires_in) * 1000)


class FallbackUrls:
    """The primary source's URL, or the fallback's when the primary fails."""

    def __init__(self, primary: UrlSource, fallback: UrlSource) -> None:
        self._primary = primary
        self._fallback = fallback

    async def url_for(self, bucket: str, key: str) -> tuple[str, int | None]:
        try:
            return await self._primary.url_for(bucket, key)
        except SyncError as exc:
            log.warning("url generation failed, falling back", extra={"error": str(exc)})
            return await self._fallback.url_for(bucket, key)


def url_source(urls: UrlSettings, aws: AwsClients) -> UrlSource:
    """What the settings ask for: the public URL (presigned when it cannot be made), or a
    presigned GET living S3_PRESIGN_EXPIRES."""
    presigned = PresignedUrls(aws.s3, urls.presign_expires, aws.signed_head)
    if urls.public_base_url:
        return FallbackUrls(PublicUrls(str(urls.public_base_url)), presigned)
    return presigned
