"""HeadObject and presigned GETs on the hot path: signed by botocore, without its pipeline.

HeadObject is the one S3 call made for every created object. Through botocore's whole request
pipeline (parameter validation, endpoint rules, event hooks, response parsing) it costs about
2 ms of CPU per call, more than the rest of the event's path together. Here the request is built
from what botocore itself sent: once per bucket, a real HeadObject goes through the client, and
a ``before-send`` hook (botocore's documented event) notes the URL it was sent to and the region
it was signed for: endpoint rules, path or virtual-host style and region redirects all stay
botocore's. Every later request is that URL plus the key, signed with botocore's own
``S3SigV4Auth`` and the session's credentials, and sent on one aiohttp pool, for about 0.6 ms.
A presigned GET URL for the reader is made the same way (:meth:`SignedHead.presign_get`, with
``S3SigV4QueryAuth``): about 0.1 ms instead of 0.5 ms through ``generate_presigned_url``.

It answers only what it can answer exactly: 200 (the object's headers, shaped as botocore's
``head_object`` response) and 404 (gone). Anything else returns ``None``, so the caller asks
the full client, which owns retries, redirects, region discovery and error mapping: a
redirect, a 400, a 403, throttling, a 5xx or a network error. The key goes on the wire exactly
as botocore sends it (percent-encoded, ``/`` kept, no dot-segment normalisation).
"""

from __future__ import annotations

import asyncio
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import BotoCoreError, ClientError
from yarl import URL

GONE: Final = "gone"
PROBE_KEY = ".s3convex-address-probe"  # any key: only where the request goes matters
PROBE_RETRY_SECONDS = 30.0
_SIGNED_FOR = re.compile(r"Credential=[^/,]+/\d{8}/([^/,]+)/s3/aws4_request")
_probe_requests: ContextVar[list[Any] | None] = ContextVar("signed_head_probe", default=None)
_HEADERS = {  # response header → botocore's head_object field
    "content-length": "ContentLength",
    "etag": "ETag",
    "content-type": "ContentType",
    "x-amz-version-id": "VersionId",
    "x-amz-server-side-encryption": "ServerSideEncryption",
    "x-amz-server-side-encryption-aws-kms-key-id": "SSEKMSKeyId",
    "x-amz-storage-class": "StorageClass",
    "x-amz-checksum-sha256": "ChecksumSHA256",
    "x-amz-checksum-sha1": "ChecksumSHA1",
    "x-amz-checksum-crc32": "ChecksumCRC32",
    "x-amz-checksum-crc32c": "ChecksumCRC32C",
    "x-amz-checksum-crc64nvme": "ChecksumCRC64NVME",
}
_META = "x-amz-meta-"
_MOVED = frozenset({301, 307, 308})


@dataclass(frozen=True, slots=True)
class _Address:
    base: str  # the bucket's URL up to the key
    region: str  # the region botocore signed for


class SignedHead:
    """HEAD requests for one S3 client's buckets; see the module docstring for what it answers."""

    def __init__(self, s3_client: Any, credentials: Any, http: aiohttp.ClientSession) -> None:
        self._s3 = s3_client
        self._credentials = credentials
        self._http = http
        self._addresses: dict[str, _Address] = {}
        self._probing = asyncio.Lock()
        self._probe_again_at: dict[str, float] = {}  # after a probe that failed (S3 unreachable)
        self._declined: set[str] = set()  # buckets the client must serve from now on
        s3_client.meta.events.register("before-send.s3.HeadObject", _note_probe_request)

    async def head(self, bucket: str, key: str, version_id: str | None = None) -> dict[str, Any] | str | None:
        """botocore-shaped response fields, :data:`GONE` on 404, or ``None``: ask the client."""
        address = await self._known(bucket)
        if address is None:
            return None
        url = address.base + quote(key, safe="/~")
        if version_id:
            url += "?versionId=" + quote(version_id, safe="-_.~")
        try:
            request = AWSRequest(method="HEAD", url=url, headers={"x-amz-checksum-mode": "ENABLED"})
            credentials = await self._credentials.get_frozen_credentials()
            S3SigV4Auth(credentials, "s3", address.region).add_auth(request)
            async with self._http.head(URL(url, encoded=True), headers=dict(request.headers.items()),
                                       allow_redirects=False) as response:
                status, headers = response.status, _decoded(response.raw_headers)
        except (TimeoutError, aiohttp.ClientError, OSError, BotoCoreError):
            return None
        if status == 200:
            return _fields(headers)
        if status == 404:
            return GONE
        if status in _MOVED or headers.get("x-amz-bucket-region", address.region) != address.region:
            self._declined.add(bucket)
        return None

    async def presign_get(self, bucket: str, key: str, expires_in: int) -> str | None:
        """A SigV4 query-signed GET URL, or ``None``: ask the client (bucket not learned)."""
        address = await self._known(bucket)
        if address is None:
            return None
        request = AWSRequest(method="GET", url=address.base + quote(key, safe="/~"))
        try:
            credentials = await self._credentials.get_frozen_credentials()
            S3SigV4QueryAuth(credentials, "s3", address.region, expires=expires_in).add_auth(request)
        except BotoCoreError:
            return None
        return request.url

    async def _known(self, bucket: str) -> _Address | None:
        """Where the bucket is, learned once; ``None`` when it is left to the client."""
        if bucket in self._declined:
            return None
        return self._addresses.get(bucket) or await self._address(bucket)

    async def _address(self, bucket: str) -> _Address | None:
        """Send one HeadObject through the client and note where, and for which region, it went."""
        async with self._probing:
            if bucket in self._addresses:
                return self._addresses[bucket]
            if time.monotonic() < self._probe_again_at.get(bucket, 0.0):
                return None
            sent: list[Any] = []
            token = _probe_requests.set(sent)
            try:
                await self._s3.head_object(Bucket=bucket, Key=PROBE_KEY)
            except ClientError:
                pass  # 404, most likely: the request went out, and that is all we need
            except BotoCoreError:
                sent.clear()  # not sent, or no answer: try again in a while, not per event
            finally:
                _probe_requests.reset(token)
            if not sent:
                self._probe_again_at[bucket] = time.monotonic() + PROBE_RETRY_SECONDS
                return None
            url, authorization = sent[-1].url, sent[-1].headers.get("Authorization", b"")
            if isinstance(authorization, bytes):
                authorization = authorization.decode()
            path, region = url.split("?", 1)[0], _SIGNED_FOR.search(authorization)
            if not path.endswith("/" + PROBE_KEY) or region is None:
                self._declined.add(bucket)  # not a plain SigV4 HEAD of bucket + key: leave it
                return None
            address = self._addresses[bucket] = _Address(path.removesuffix(PROBE_KEY), region.group(1))
            return address


def _note_probe_request(request: Any, **_: Any) -> None:
    """botocore's ``before-send`` hook: keep the probe's prepared request; send it as usual."""
    sent = _probe_requests.get()
    if sent is not None:
        sent.append(request)


def _decoded(raw: Any) -> dict[str, str]:
    # As aiobotocore does: names lower-cased, names and values read as UTF-8.
    return {name.decode("utf-8").lower(): value.decode("utf-8") for name, value in raw}


def _fields(headers: dict[str, str]) -> dict[str, Any]:
    response: dict[str, Any] = {field: headers[name] for name, field in _HEADERS.items() if name in headers}
    if "ContentLength" in response:
        response["ContentLength"] = int(response["ContentLength"])
    response["Metadata"] = {name[len(_META):]: value for name, value in headers.items() if name.startswith(_META)}
    return response
