"""ObjectCreated → what S3 holds now (HeadObject) → an upsert; ObjectRemoved → a tombstone."""

from __future__ import annotations

import logging

from consumer.models import ObjectEvent
from handlers.asset import AssetChange, etag_kind
from handlers.context import HandlerContext
from handlers.registry import HandlerRegistry

log = logging.getLogger(__name__)
registry = HandlerRegistry()


def _base(event: ObjectEvent, type_: str) -> dict[str, object]:
    return {
        "type": type_,
        "bucket": event.bucket,
        "key": event.key,
        "eventName": event.event_name,
        "eventTime": event.event_time_ms,
        "sequencer": event.sequencer,
        "versionId": event.version_id,
        "source": event.source,
    }


@registry.on("ObjectCreated:*")
async def on_object_created(event: ObjectEvent, ctx: HandlerContext) -> AssetChange:
    head = await ctx.store.head(event.bucket, event.key, event.version_id)
    url, expires_at = await ctx.urls.url_for(event.bucket, event.key)
    if head is None or (event.etag and head.etag != event.etag):
        # The object is gone, or was overwritten since this event: S3 no longer holds what the
        # event describes, so record the event's own facts and let ordering in Convex decide —
        # the removal or the newer write has its own event on the way.
        log.info("object changed since event", extra={"gone": head is None})
        return AssetChange(
            **_base(event, "created"),
            size=event.size if event.size is not None else 0,
            etag=event.etag,
            etagKind=etag_kind(event.etag),
            contentType=event.content_type,
            metadata=event.user_metadata or None,
            url=url,
            urlExpiresAt=expires_at,
        )
    sse = head.encryption.sse if head.encryption else None
    return AssetChange(
        **{**_base(event, "created"), "versionId": head.version_id or event.version_id},
        size=head.size,
        etag=head.etag,
        etagKind=etag_kind(head.etag, sse),
        contentType=head.content_type,
        metadata=head.metadata or None,
        checksums=head.checksums,
        encryption=head.encryption,
        storageClass=head.storage_class,
        url=url,
        urlExpiresAt=expires_at,
    )


@registry.on("ObjectRemoved:*")
@registry.on("LifecycleExpiration:Delete*")
async def on_object_removed(event: ObjectEvent, ctx: HandlerContext) -> AssetChange:
    return AssetChange(**_base(event, "removed"))
