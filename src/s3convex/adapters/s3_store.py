"""What S3 holds now for a key: HeadObject, implementing :class:`~s3convex.core.ports.ObjectStore`.

:class:`S3ObjectStore` asks :class:`~s3convex.adapters.signed_head.SignedHead` first when it has one (the
cheap path for the common answers, 200 and 404) and the full aiobotocore client for everything
else, so retries, redirects and error mapping stay botocore's.
"""

from __future__ import annotations

from typing import Any

from s3convex.adapters.signed_head import GONE, SignedHead
from s3convex.core.asset import Checksums, Encryption
from s3convex.core.errors import NotFound, StorageError
from s3convex.core.ports import ObjectHead

_CHECKSUM_FIELDS = {
    "ChecksumSHA256": "sha256",
    "ChecksumSHA1": "sha1",
    "ChecksumCRC32": "crc32",
    "ChecksumCRC32C": "crc32c",
    "ChecksumCRC64NVME": "crc64nvme",
}


class S3ObjectStore:
    def __init__(self, s3_client: Any, signed: SignedHead | None = None) -> None:
        self._s3 = s3_client
        self._signed = signed

    async def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectHead | None:
        version_id = version_id if version_id != "null" else None
        if self._signed is not None:
            answer = await self._signed.head(bucket, key, version_id)
            if answer == GONE:
                return None
            if isinstance(answer, dict):
                return _to_head(answer)
        return await self._head(bucket, key, version_id)

    async def _head(self, bucket: str, key: str, version_id: str | None) -> ObjectHead | None:
        params: dict[str, Any] = {"Bucket": bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if version_id:
            params["VersionId"] = version_id
        try:  # the client of open_clients: its errors are mapped already
            response = await self._s3.head_object(**params)
        except NotFound:
            # HEAD has no body, so a missing key or version is a bare 404: the object is
            # gone, not an error loop.
            return None
        except StorageError as exc:
            if exc.status == 400 and "VersionId" in params:
                # A version id this bucket does not know (e.g. versioning suspended since):
                # ask for the current object; the caller compares ETags.
                return await self._head(bucket, key, None)
            raise
        return _to_head(response)


def _to_head(response: dict[str, Any]) -> ObjectHead:
    checksums = {
        name: response[field_name] for field_name, name in _CHECKSUM_FIELDS.items() if response.get(field_name)
    }
    sse = response.get("ServerSideEncryption")
    return ObjectHead(
        size=int(response.get("ContentLength", 0)),
        etag=str(response.get("ETag", "")).strip('"'),
        content_type=response.get("ContentType"),
        version_id=response.get("VersionId") or None,
        metadata=dict(response.get("Metadata") or {}),
        checksums=Checksums(**checksums) if checksums else None,
        encryption=Encryption(sse=sse, kmsKeyId=response.get("SSEKMSKeyId")) if sse else None,
        storage_class=response.get("StorageClass") or "STANDARD",
    )
