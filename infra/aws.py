"""boto3 clients for provisioning, their errors mapped by the project's one botocore table.

:func:`make_clients` builds the S3 and SQS clients for the settings' endpoint and region;
botocore retries each request itself ("standard" mode, :data:`MAX_ATTEMPTS` attempts).
:func:`aws_call` calls one operation and maps what fails with
:func:`s3convex.adapters.aws.map_aws_error` — the same table the daemon uses — keeping AWS's own
code, status and message, which is what a person running ``infra up`` must read: a "not there"
answer is a :class:`~s3convex.core.errors.NotFound` (which the resource checks catch where
absence is an answer), SQS's "deleted recently", throttling, 5xx and network failures are
:class:`~s3convex.core.errors.StorageUnavailable`, a refusal of these credentials a
:class:`~s3convex.core.errors.StorageForbidden`, everything else a
:class:`~s3convex.core.errors.StorageError`. :func:`aws_pages` maps each page of a paginated
operation alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
from botocore.config import Config

from s3convex.adapters.aws import aws_errors, describe
from s3convex.core.errors import NotFound
from s3convex.settings import AwsSettings

MAX_ATTEMPTS = 5  # botocore's attempts per provisioning request (the first included)

# The name the resource checks knew "not there" by; it is the project's NotFound kind.
_Missing = NotFound


def make_clients(aws: AwsSettings) -> tuple[Any, Any]:
    """S3 and SQS clients for the settings' endpoint and region, standard credential chain."""
    options: dict[str, Any] = {
        "retries": {"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        "connect_timeout": 5,
        "read_timeout": 30,
    }
    if aws.endpoint_url:
        # Custom endpoints (emulators, MinIO-likes, VPC endpoints by IP) rarely resolve
        # bucket-name subdomains; path-style addressing works everywhere.
        options["s3"] = {"addressing_style": "path"}
    session = boto3.Session(region_name=aws.region)
    config = Config(**options)
    return (
        session.client("s3", endpoint_url=aws.endpoint_url, config=config),
        session.client("sqs", endpoint_url=aws.endpoint_url, config=config),
    )


def aws_call(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call one botocore operation (a bound client method), its errors mapped by the table."""
    client = getattr(fn, "__self__", None)
    names = getattr(getattr(client, "meta", None), "method_to_api_mapping", {})
    name = getattr(fn, "__name__", "")
    with aws_errors(describe(names.get(name, name), kwargs)):
        return fn(*args, **kwargs)


def aws_pages(client: Any, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """The pages of a paginated operation, each fetch mapped like :func:`aws_call`."""
    pages = iter(client.get_paginator(operation).paginate(**kwargs))
    name = client.meta.method_to_api_mapping.get(operation, operation)
    while True:
        with aws_errors(describe(name, kwargs)):
            page = next(pages, None)
        if page is None:
            return
        yield page
