"""Route each object event to its registered handler, under the logging context of its key."""

from __future__ import annotations

import asyncio

from s3convex.consumer.logs import log_context
from s3convex.core.asset import AssetChange
from s3convex.core.events import ObjectEvent
from s3convex.handlers.context import HandlerContext
from s3convex.handlers.registry import HandlerRegistry


class Dispatcher:
    def __init__(self, registry: HandlerRegistry, context: HandlerContext, *, concurrency: int) -> None:
        self._registry = registry
        self._context = context
        # Bounds concurrent handler calls (HeadObject round trips) across all messages.
        self._slots = asyncio.Semaphore(concurrency)

    async def dispatch(self, event: ObjectEvent) -> AssetChange:
        handler = self._registry.resolve(event)  # raises PoisonMessage when nothing matches
        with log_context(bucket=event.bucket, key=event.key, s3_request_id=event.request_id,
                         s3_host_id=event.host_id):
            async with self._slots:
                return await handler(event, self._context)
