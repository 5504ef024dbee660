"""The URL a reader uses: a public CDN URL when a base is configured, else a presigned GET."""

from __future__ import annotations

import time
from typing import Any, Protocol
from urllib.parse import quote

from consumer.aws import map_aws_error


class UrlSource(Protocol):
    async def url_for(self, bucket: str, key: str) -> tuple[str, int | None]:
        """``(url, expires_at_ms)``; ``expires_at_ms`` is None for a URL that does not expire."""
        ...


def public_url(base: str, key: str) -> str:
    # Each segment percent-encoded on its own, so "/" keeps separating path segments and
    # spaces, "+", "?", "#" and non-ASCII characters survive any CDN.
    return base.rstrip("/") + "/" + "/".join(quote(segment, safe="") for segment in key.split("/"))


class PublicUrls:
    def __init__(self, base: str) -> None:
        self._base = base

    async def url_for(self, bucket: str, key: str) -> tuple[str, int | None]:
        return public_url(self._base, key), None


class PresignedUrls:
    def __init__(self, s3_client: Any, expires_in: int) -> None:
        self._s3 = s3_client
        self._expires_in = expires_in

    async def url_for(self, bucket: str, key: str) -> tuple[str, int | None]:
        issued = time.time()
        try:
            url = await self._s3.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self._expires_in
            )
        except Exception as exc:
            raise map_aws_error(exc, "presign GetObject") from exc
        return url, int((issued + self._expires_in) * 1000)
