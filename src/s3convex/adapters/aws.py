"""aiobotocore clients for S3 and SQS, and the mapping of botocore errors into our two roots.

Everything that talks to AWS goes through clients made here, so endpoint, region, pool size
and botocore's own retry budget are decided in one place. botocore retries throttling a few
times itself ("standard" mode); what still fails is mapped by :func:`map_aws_error`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from s3convex.adapters.signed_head import SignedHead
from s3convex.core.errors import StorageError, StorageUnavailable, SyncError
from s3convex.settings import AwsSettings

_RETRYABLE_CODES = frozenset(
    {
        "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
        "RequestThrottledException", "SlowDown", "TooManyRequestsException",
        "ProvisionedThroughputExceededException", "RequestLimitExceeded",
        "InternalError", "InternalFailure", "ServiceUnavailable", "RequestTimeout",
        "RequestTimeoutException", "PriorRequestNotComplete", "KMS.ThrottlingException",
    }
)
_NETWORK_ERRORS = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)


@dataclass(frozen=True, slots=True)
class AwsClients:
    s3: Any
    sqs: Any
    signed_head: SignedHead | None = None  # cheap HeadObject and presign (consumer_signed_head)


@contextlib.asynccontextmanager
async def open_clients(
    aws: AwsSettings,
    *,
    max_pool_connections: int = 64,
    long_poll_seconds: int = 20,
    signed_head: bool = True,
) -> AsyncIterator[AwsClients]:
    """S3 and SQS clients for ``aws``'s endpoint and region (standard credential chain);
    ``signed_head`` adds the cheap signed HeadObject / presign path (CONSUMER_SIGNED_HEAD)."""
    common = {
        "max_pool_connections": max_pool_connections,
        "retries": {"mode": "standard", "max_attempts": 3},
        "connect_timeout": 5,
        "read_timeout": long_poll_seconds + 10,  # a long poll must not time out
    }
    s3_config = AioConfig(
        **common,
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
            fast_path = SignedHead(s3, credentials, http)
        yield AwsClients(s3=s3, sqs=sqs, signed_head=fast_path)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def map_aws_error(exc: Exception, action: str) -> SyncError:
    """Map a botocore error to :class:`StorageUnavailable` (retry later) or :class:`StorageError`."""
    if isinstance(exc, ClientError):
        code, status = error_code(exc), http_status(exc)
        text = f"{action}: {code or 'error'} (HTTP {status})"
        if code in _RETRYABLE_CODES or status == 429 or status >= 500:
            return StorageUnavailable(text)
        return StorageError(text)
    if isinstance(exc, (*_NETWORK_ERRORS, OSError, TimeoutError)):
        return StorageUnavailable(f"{action}: {type(exc).__name__}: {exc}")
    if isinstance(exc, BotoCoreError):
        return StorageError(f"{action}: {type(exc).__name__}: {exc}")
    return StorageUnavailable(f"{action}: {type(exc).__name__}: {exc}")
