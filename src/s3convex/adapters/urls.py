"""The URL a reader uses: a public CDN URL when a base is configured, else a presigned GET.

With a public base, :class:`FallbackUrls` falls back to a presigned URL when the public one
cannot be made, so a reader still gets a working link (R1.5).

Each source names its configuration (``config``, stored on the asset as ``urlConfig``, R8.3):
``public:<base URL>`` or ``presigned:<S3_PRESIGN_EXPIRES>``. The name is stable (the same
settings give the same name on every replica and restart), changes whenever the URLs it makes
would change, and holds nothing secret: a base URL's user and password, if it has any, are
replaced by a digest of the whole base (:func:`public_config`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from s3convex.adapters.aws import AwsClients, aws_errors
from s3convex.adapters.signed_head import SignedHead
from s3convex.core.errors import PermanentError, SyncError
from s3convex.core.ports import SignedUrl, UrlSource
from s3convex.settings import UrlSettings

log = logging.getLogger(__name__)

# Convex refuses a longer urlConfig (MAX_URL_CONFIG_LENGTH in convex/events.ts).
MAX_URL_CONFIG_LENGTH = 256


def presigned_config(expires_in: int) -> str:
    return f"presigned:{expires_in}"


def public_config(base: str) -> str:
    """``public:<base>`` without a trailing slash (the same URLs either way). A base holding a
    user or password, or one too long for Convex, is named by a digest of the whole base
    instead: still stable, still different for every base, and no secret in a record."""
    base = base.rstrip("/")
    parts = urlsplit(base)
    digest = "#" + hashlib.sha256(base.encode()).hexdigest()[:16]
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
        return _fit(f"public:{urlunsplit(parts._replace(netloc=netloc))}", digest)
    name = f"public:{base}"
    return name if len(name) <= MAX_URL_CONFIG_LENGTH else _fit(name, digest)


def _fit(name: str, digest: str) -> str:
    return name[:MAX_URL_CONFIG_LENGTH - len(digest)] + digest


def public_url(base: str, key: str) -> str:
    # Each segment percent-encoded on its own, so "/" keeps separating path segments and
    # spaces, "+", "?", "#" and non-ASCII characters survive any CDN.
    return base.rstrip("/") + "/" + "/".join(quote(segment, safe="") for segment in key.split("/"))


class PublicUrls:
    def __init__(self, base: str) -> None:
        self._base = base
        self.config = public_config(base)

    async def url_for(self, bucket: str, key: str, *, expires_in: int | None = None) -> SignedUrl:
        try:
            return SignedUrl(public_url(self._base, key), None, self.config)
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
        self.config = presigned_config(expires_in)

    async def url_for(self, bucket: str, key: str, *, expires_in: int | None = None) -> SignedUrl:
        url, expires_at = await self.presign(bucket, key, expires_in or self._expires_in)
        return SignedUrl(url, expires_at, self.config)

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

    @property
    def config(self) -> str:
        """The primary's: records should end up with its URLs; a fallback URL says its own."""
        return self._primary.config

    async def url_for(self, bucket: str, key: str, *, expires_in: int | None = None) -> SignedUrl:
        try:
            return await self._primary.url_for(bucket, key, expires_in=expires_in)
        except SyncError as exc:
            log.warning("url generation failed, falling back", extra={"error": str(exc)})
            return await self._fallback.url_for(bucket, key, expires_in=expires_in)


def url_source(urls: UrlSettings, aws: AwsClients) -> UrlSource:
    """What the settings ask for: the public URL (presigned when it cannot be made), or a
    presigned GET living S3_PRESIGN_EXPIRES."""
    presigned = PresignedUrls(aws.s3, urls.presign_expires, aws.signed_head)
    if urls.public_base_url:
        return FallbackUrls(PublicUrls(str(urls.public_base_url)), presigned)
    return presigned
