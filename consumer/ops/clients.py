"""The clients an operator command needs, opened from the settings and closed at the end.

    async with clients(aws=settings.aws, convex=settings.convex) as opened:
        await opened.convex.query(...)
        await opened.aws.s3.head_bucket(...)

Each part of the settings given opens its client: ``aws`` the S3 and SQS clients, ``convex`` a
Convex client (:meth:`ConvexClient.from_settings`), ``sqs`` (with ``aws``) resolves the queue
and its DLQ. A command passes only the parts it needs, so ``replay list`` runs without Convex
settings and ``url grant`` without AWS ones. Asking for a client that was not opened is a bug
in the command, and says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

from s3convex.adapters.aws import AwsClients, open_clients
from s3convex.adapters.convex import ConvexClient
from s3convex.adapters.queues import Queues, resolve_queues
from s3convex.settings import AwsSettings, ConvexSettings, SqsSettings

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OpsClients:
    aws_clients: AwsClients | None = None
    convex_client: ConvexClient | None = None
    resolved_queues: Queues | None = None

    @property
    def aws(self) -> AwsClients:
        return _opened(self.aws_clients, "aws")

    @property
    def convex(self) -> ConvexClient:
        return _opened(self.convex_client, "convex")

    @property
    def queues(self) -> Queues:
        return _opened(self.resolved_queues, "sqs")


def _opened(client: T | None, part: str) -> T:
    if client is None:
        raise RuntimeError(f"this command did not open it: pass {part}=... to clients()")
    return client


@contextlib.asynccontextmanager
async def clients(*, aws: AwsSettings | None = None, sqs: SqsSettings | None = None,
                  convex: ConvexSettings | None = None, max_pool_connections: int = 16,
                  convex_timeout: float | None = None, convex_attempts: int = 4,
                  ) -> AsyncIterator[OpsClients]:
    """Open what the given settings parts name (see the module docstring); close it all on exit."""
    if sqs is not None and aws is None:
        raise ValueError("resolving the queues (sqs=...) needs the AWS clients (aws=...)")
    async with contextlib.AsyncExitStack() as stack:
        aws_clients = convex_client = queues = None
        if aws is not None:
            aws_clients = await stack.enter_async_context(
                open_clients(aws, max_pool_connections=max_pool_connections))
        if convex is not None:
            convex_client = await stack.enter_async_context(ConvexClient.from_settings(
                convex, timeout=convex_timeout, attempts=convex_attempts))
        if sqs is not None and aws_clients is not None:
            queues = await resolve_queues(aws_clients.sqs, sqs)
        yield OpsClients(aws_clients, convex_client, queues)
