"""ObjectCreated → what S3 holds now (HeadObject) → an upsert; ObjectRemoved → a tombstone."""

from __future__ import annotations

import logging
from typing import Literal, TypedDict

from s3convex.core.asset import AssetChange, etag_kind
from s3convex.core.errors import SyncError
from s3convex.core.events import ObjectEvent
from s3convex.core.layout import AssetKeyFields
from s3convex.handlers.context import HandlerContext
from s3convex.handlers.registry import HandlerRegistry

log = logging.getLogger(__name__)
registry = HandlerRegistry()


class _EventFields(AssetKeyFields):
    """What every change carries: the event's own facts and what the key means."""

    type: Literal["created", "removed"]
    bucket: str
    key: str
    eventName: str
    eventTime: int
    sequencer: str | None
    versionId: str | None
    source: str


class _UrlFields(TypedDict, total=False):
    """The stored URL and the configuration that made it, or why there is none this time."""

    url: str
    urlExpiresAt: int | None
    urlConfig: str
    urlError: str


def _base(event: ObjectEvent, type_: Literal["created", "removed"], ctx: HandlerContext,
          version_id: str | None = None) -> _EventFields:
    """``version_id``: the version S3 reports now, when known; else the event's."""
    return {
        "type": type_,
        "bucket": event.bucket,
        "key": event.key,
        "eventName": event.event_name,
        "eventTime": event.event_time_ms,
        "sequencer": event.sequencer,
        "versionId": version_id or event.version_id,
        "source": event.source,
        **ctx.layout.classify(event.key).asset_fields(),
    }


async def _url(event: ObjectEvent, ctx: HandlerContext) -> _UrlFields:
    """The stored URL fields and the configuration that made the URL; a failure is recorded on
    the asset (Convex keeps the last good URL and its configuration) instead of failing the
    event — the object did change, and that must land."""
    try:
        signed = await ctx.urls.url_for(event.bucket, event.key)
    except SyncError as exc:
        log.warning("url generation failed", extra={"error": str(exc)})
        return {"urlError": (str(exc) or type(exc).__name__)[:500]}
    return {"url": signed.url, "urlExpiresAt": signed.expires_at_ms, "urlConfig": signed.config}


@registry.on("ObjectCreated:*")
async def on_object_created(event: ObjectEvent, ctx: HandlerContext) -> AssetChange:
    head = await ctx.store.head(event.bucket, event.key, event.version_id)
    url = await _url(event, ctx)
    if head is None or (event.etag and head.etag != event.etag):
        # The object is gone, or was overwritten since this event: S3 no longer holds what the
        # event describes, so record the event's own facts and let ordering in Convex decide —
        # the removal or the newer write has its own event on the way.
        log.info("object changed since event", extra={"gone": head is None})
        return AssetChange(
            **_base(event, "created", ctx),
            **url,
            size=event.size if event.size is not None else 0,
            etag=event.etag,
            etagKind=etag_kind(event.etag),
            contentType=event.content_type,
            metadata=event.user_metadata or None,
        )
    sse = head.encryption.sse if head.encryption else None
    return AssetChange(
        **_base(event, "created", ctx, version_id=head.version_id),
        **url,
        size=head.size,
        etag=head.etag,
        etagKind=etag_kind(head.etag, sse),
        contentType=head.content_type,
        metadata=head.metadata or None,
        checksums=head.checksums,
        encryption=head.encryption,
        storageClass=head.storage_class,
    )


@registry.on("ObjectRemoved:*")
@registry.on("LifecycleExpiration:Delete*")
async def on_object_removed(event: ObjectEvent, ctx: HandlerContext) -> AssetChange:
    return AssetChange(**_base(event, "removed", ctx))
