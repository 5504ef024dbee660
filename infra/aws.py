"""boto3 clients for provisioning, with botocore's errors mapped here, at the boundary.

:func:`make_clients` builds the S3 and SQS clients for the settings' endpoint and region.
:func:`aws_call` calls one operation: a "not there" answer becomes :class:`_Missing` (which the
resource checks catch where absence is an answer), SQS's "deleted recently", throttling, 5xx and
network failures become :class:`~s3convex.core.errors.StorageUnavailable`, everything else
:class:`~s3convex.core.errors.StorageError` — keeping AWS's own message, which is what a person
running ``infra up`` must read. :func:`aws_pages` maps each page of a paginated operation alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from s3convex.adapters.aws import map_aws_error
from s3convex.core.errors import StorageError, StorageUnavailable
from s3convex.settings import AwsSettings

# "Not there" answers; every other error is mapped to the error tree.
_MISSING_CODES = {
    "404",
    "NoSuchBucket",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "NoSuchCORSConfiguration",
    "ServerSideEncryptionConfigurationNotFoundError",
}
# SQS refuses to re-create a queue for 60 s after it was deleted: worth retrying, for `up`.
_RETRY_LATER_CODES = {"AWS.SimpleQueueService.QueueDeletedRecently", "QueueDeletedRecently"}


def make_clients(aws: AwsSettings) -> tuple[Any, Any]:
    """S3 and SQS clients for the settings' endpoint and region, standard credential chain."""
    options: dict[str, Any] = {
        "retries": {"mode": "standard", "max_attempts": 5},
        "connect_timeout": 5,
        "read_timeout": 30,
    }
    if aws.endpoint_url:
        # Custom endpoints (emulators, MinIO-likes, VPC endpoints by IP) rarely resolve
        # bucket-name subdomains; path-style addressing works everywhere.
        options["s3"] = {"addressing_style": "path"}
    session = boto3.session.Session(region_name=aws.region)
    config = Config(**options)
    return (
        session.client("s3", endpoint_url=aws.endpoint_url, config=config),
        session.client("sqs", endpoint_url=aws.endpoint_url, config=config),
    )


class _Missing(StorageError):
    """The bucket or queue asked about does not exist (callers that expect this catch it)."""


def aws_call(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call one botocore operation, mapping its errors into the project's error tree.

    AWS's answers are classified as the daemon's are (:func:`s3convex.adapters.aws.map_aws_error`); the
    message keeps AWS's own explanation, which is what a person running ``infra up`` must read.
    """
    try:
        return fn(*args, **kwargs)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = f"{exc.operation_name}: {code}: {error.get('Message', '')}".rstrip(": ")
        if code in _MISSING_CODES or error.get("QueryErrorCode") in _MISSING_CODES:
            raise _Missing(message) from exc
        if code in _RETRY_LATER_CODES:
            raise StorageUnavailable(message) from exc
        raise type(map_aws_error(exc, exc.operation_name))(message) from exc
    except (BotoConnectionError, HTTPClientError) as exc:  # refused, reset, timed out
        raise StorageUnavailable(f"cannot reach AWS: {exc}") from exc
    except BotoCoreError as exc:  # no credentials, no region, invalid parameters...
        raise StorageError(f"{type(exc).__name__}: {exc}") from exc


def aws_pages(client: Any, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """The pages of a paginated operation, each fetch mapped like :func:`aws_call`."""
    pages = iter(client.get_paginator(operation).paginate(**kwargs))
    while (page := aws_call(next, pages, None)) is not None:
        yield page
