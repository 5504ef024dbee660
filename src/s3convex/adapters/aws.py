"""aiobotocore clients for S3 and SQS, and the one mapping of botocore errors into our tree.

Everything that talks to AWS goes through clients made here, so endpoint, region, pool size
and botocore's own retry budget are decided in one place. botocore retries what may pass itself
("standard" mode, :data:`MAX_ATTEMPTS` attempts: throttling, 5xx, timeouts, broken connections,
with a jittered wait of at most 1 s, then 2 s); that is the only retry of an S3/SQS request.

What still fails is mapped by :func:`map_aws_error`, the table below, and nowhere else: the
clients of :func:`open_clients` are wrapped (:class:`MappedClient`) so every operation raises
only errors of :mod:`s3convex.core.errors`, named by the operation and what it was about
(``GetQueueUrl s3convex-events``, ``HeadObject video-assets/a.mp4``), with AWS's code, HTTP
status and message. The provisioning code's boto3 clients use the same table
(:func:`s3convex.infra.aws.aws_call`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from s3convex.adapters.signed_head import SignedHead
from s3convex.core.errors import (
    StorageError,
    StorageForbidden,
    StorageNotFound,
    StorageUnavailable,
    SyncError,
)
from s3convex.settings import AwsSettings

MAX_ATTEMPTS = 3  # botocore's attempts per S3/SQS request (the first included)

# --- the table: what AWS's answer means -----------------------------------------------------
# The error code decides first (SQS's JSON protocol also sends its older query code, botocore's
# QueryErrorCode: both are looked up), then the HTTP status, then the exception's type.
_KIND_BY_CODE: dict[str, type[SyncError]] = {
    **dict.fromkeys((
        "NoSuchKey", "NoSuchVersion", "NoSuchBucket", "NoSuchUpload", "NotFound", "404",
        "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist",
        "NoSuchCORSConfiguration", "ServerSideEncryptionConfigurationNotFoundError",
        "NoSuchBucketPolicy", "NoSuchLifecycleConfiguration", "NoSuchTagSet",
    ), StorageNotFound),
    **dict.fromkeys((
        "AccessDenied", "AccessDeniedException", "AllAccessDisabled", "AuthorizationError",
        "InvalidAccessKeyId", "InvalidClientTokenId", "UnrecognizedClientException",
        "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException", "InvalidToken",
        "KMS.AccessDeniedException", "403",
    ), StorageForbidden),
    **dict.fromkeys((
        "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
        "RequestThrottledException", "SlowDown", "TooManyRequestsException",
        "ProvisionedThroughputExceededException", "RequestLimitExceeded", "KMS.ThrottlingException",
        "InternalError", "InternalFailure", "ServiceUnavailable", "RequestTimeout",
        "RequestTimeoutException", "PriorRequestNotComplete",
        # SQS refuses to re-create a queue for 60 s after it was deleted.
        "AWS.SimpleQueueService.QueueDeletedRecently", "QueueDeletedRecently",
    ), StorageUnavailable),
}
_KIND_BY_STATUS: dict[int, type[SyncError]] = {
    401: StorageForbidden, 403: StorageForbidden, 404: StorageNotFound, 429: StorageUnavailable,
}  # any other status ≥ 500: StorageUnavailable; below: StorageError
_KIND_BY_EXCEPTION: tuple[tuple[tuple[type[BaseException], ...], type[SyncError]], ...] = (
    # refused, reset, timed out, TLS, proxy: the request may pass later
    ((BotoConnectionError, HTTPClientError, OSError, TimeoutError, aiohttp.ClientError), StorageUnavailable),
    # no credentials, no region, invalid parameters: nothing was asked
    ((BotoCoreError,), StorageError),
)
# What the wrapper and :func:`aws_errors` map; anything else is not an AWS error and propagates.
AWS_ERRORS: tuple[type[BaseException], ...] = (ClientError, BotoCoreError, OSError, TimeoutError,
                                               aiohttp.ClientError)
# An error body botocore could not parse (moto answers SQS's JSON protocol in XML) keeps AWS's
# words in the message: its Code and Message are read from it.
_XML_CODE = re.compile(r"<Code>([^<]+)</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")


def map_aws_error(exc: BaseException, operation: str) -> SyncError:
    """The error of our tree that says what ``exc`` (raised by botocore for ``operation``) means."""
    if isinstance(exc, SyncError):
        return exc  # mapped already (by the client wrapper)
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code") or ""), str(error.get("Message") or "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code.isdigit() and (said := _XML_CODE.search(message)):
            found = _XML_MESSAGE.search(message)
            code, message = said.group(1), found.group(1) if found else ""
        kind = (_KIND_BY_CODE.get(code) or _KIND_BY_CODE.get(str(error.get("QueryErrorCode")))
                or _kind_by_status(status))
        return kind(message, operation=operation, code=code or None, status=status)
    for types, kind in _KIND_BY_EXCEPTION:
        if isinstance(exc, types):
            return kind(f"{type(exc).__name__}: {exc}", operation=operation)
    return StorageUnavailable(f"{type(exc).__name__}: {exc}", operation=operation)


def _kind_by_status(status: int | None) -> type[SyncError]:
    if status is None:
        return StorageError
    return _KIND_BY_STATUS.get(status) or (StorageUnavailable if status >= 500 else StorageError)


@contextlib.contextmanager
def aws_errors(operation: str) -> Iterator[None]:
    """``with aws_errors("presign GetObject"): ...`` — botocore's errors in the block, mapped."""
    try:
        yield
    except AWS_ERRORS as exc:
        raise map_aws_error(exc, operation) from exc


def describe(operation: str, params: Mapping[str, Any]) -> str:
    """The operation and what it was about: ``GetQueueUrl s3convex-events``,
    ``GetQueueAttributes s3convex-events`` (from the URL), ``HeadObject bucket/key``."""
    if "QueueName" in params:
        return f"{operation} {params['QueueName']}"
    if "QueueUrl" in params:
        return f"{operation} {str(params['QueueUrl']).rstrip('/').rsplit('/', 1)[-1]}"
    if "Bucket" in params:
        key = params.get("Key")
        return f"{operation} {params['Bucket']}" + (f"/{key}" if key is not None else "")
    return operation


class MappedClient:
    """An aiobotocore client whose operations raise only errors of :mod:`s3convex.core.errors`.

    ``await client.get_queue_url(QueueName=…)`` is botocore's own call; what it raises goes
    through :func:`map_aws_error` with the operation's name and subject (:func:`describe`).
    Everything else — ``meta``, ``generate_presigned_url``, paginators — is the client's own.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._operations: dict[str, str] = client.meta.method_to_api_mapping

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        operation = self._operations.get(name)
        if operation is None:
            return attribute

        async def mapped(**params: Any) -> Any:
            with aws_errors(describe(operation, params)):
                return await attribute(**params)

        mapped.__name__ = mapped.__qualname__ = name
        self.__dict__[name] = mapped  # made once per operation
        return mapped


@dataclass(frozen=True, slots=True)
class AwsClients:
    s3: Any  # MappedClient of aiobotocore's S3 client
    sqs: Any  # MappedClient of aiobotocore's SQS client
    signed_head: SignedHead | None = None  # cheap HeadObject and presign (consumer_signed_head)


@contextlib.asynccontextmanager
async def open_clients(
    aws: AwsSettings,
    *,
    max_pool_connections: int = 64,
    long_poll_seconds: int = 20,
    signed_head: bool = True,
    s3_checksums: tuple[str, str] | None = None,
) -> AsyncIterator[AwsClients]:
    """S3 and SQS clients for ``aws``'s endpoint and region (standard credential chain);
    ``signed_head`` adds the cheap signed HeadObject / presign path (CONSUMER_SIGNED_HEAD);
    ``s3_checksums`` is botocore's ``(request_checksum_calculation,
    response_checksum_validation)`` for the S3 client (default: botocore's, from the
    environment) — the uploads' setting for S3-compatible stores (``UploadSettings``)."""
    common = {
        "max_pool_connections": max_pool_connections,
        "retries": {"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        "connect_timeout": 5,
        "read_timeout": long_poll_seconds + 10,  # a long poll must not time out
    }
    checksums = ({"request_checksum_calculation": s3_checksums[0],
                  "response_checksum_validation": s3_checksums[1]} if s3_checksums else {})
    s3_config = AioConfig(
        **common,
        **checksums,
        signature_version="s3v4",  # presigned URLs are SigV4, as every region now requires
        s3={"addressing_style": "path"} if aws.endpoint_url else None,
    )
    session = get_session()
    where = {"region_name": aws.region, "endpoint_url": aws.endpoint_url}
    async with (
        session.create_client("s3", **where, config=s3_config) as s3,
        session.create_client("sqs", **where, config=AioConfig(**common)) as sqs,
        contextlib.AsyncExitStack() as stack,
    ):
        fast_path = None
        credentials = await session.get_credentials() if signed_head else None
        if credentials is not None:
            http = await stack.enter_async_context(aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=max_pool_connections),
                timeout=aiohttp.ClientTimeout(total=30, connect=5),
                auto_decompress=False,
            ))
            fast_path = SignedHead(s3, credentials, http)  # botocore's own client: it reads its events
        yield AwsClients(s3=MappedClient(s3), sqs=MappedClient(sqs), signed_head=fast_path)
