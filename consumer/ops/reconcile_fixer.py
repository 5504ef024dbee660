"""The fixer: turn drift into events and apply them through ``assets:applyEvents``.

A repair goes through the consumer's own path — the handlers build the same
:class:`~s3convex.core.asset.AssetChange` (HeadObject, URL) and ``assets:applyEvents`` applies it —
so ordering and idempotency hold: a ``created`` change carries the object's ``LastModified``
as its eventTime and a ``removed`` one the moment its absence was confirmed, and a real event
newer than either still wins. Such a fix comes back ``stale`` and is reported as unresolved.
S3 gives ``LastModified`` in whole seconds: a write within the same second as the event the
record holds cannot be ordered after it, and is reported as unresolved too. Without ``fix``,
:class:`DriftFixer` only confirms ``gone`` by HeadObject. It leaves each drift's outcome set
(``fixed``, ``unresolved``, ``resolved-itself``, or None when nothing was tried); counting and
reporting are the caller's.

A ``gone`` record that is ``available`` is fixed by ``lifecycle:markMissing`` (status ``missing``
with the time HeadObject saw the absence, R4.5), not by a removal tombstone: reconcile only
sees that S3 lost the object, never that someone deleted it, and ``missing`` says exactly that
(readers get ``gone`` with reason ``missing``; an upload under the key brings it back). The
mark is skipped when the record's ETag moved on meanwhile (reported as unresolved).
"""

from __future__ import annotations

import asyncio
from typing import Any

from s3convex.adapters.convex import ConvexClient
from s3convex.adapters.s3_store import S3ObjectStore
from s3convex.adapters.signed_head import SignedHead
from s3convex.consumer.apply import ConvexApplier
from s3convex.consumer.dispatch import Dispatcher
from s3convex.consumer.ops.output import now_ms
from s3convex.consumer.ops.reconcile_merge import Drift
from s3convex.core.errors import PermanentError, RetryableError
from s3convex.core.events import ObjectEvent
from s3convex.core.layout import KeyLayout
from s3convex.core.ports import UrlSource
from s3convex.handlers.context import HandlerContext
from s3convex.handlers.objects import registry

CREATED_EVENT = "ObjectCreated:Reconcile"
REMOVED_EVENT = "ObjectRemoved:Reconcile"
MARK_MISSING = "lifecycle:markMissing"


class DriftFixer:
    """Confirm a batch of drift by HeadObject and, with ``fix``, repair it; ``source`` marks
    the events it applies (``reconcile:<run id>``). HeadObject goes the daemon's way: through
    ``signed_head`` when there is one, the full client otherwise."""

    def __init__(self, s3: Any, convex: ConvexClient, bucket: str, *, urls: UrlSource,
                 source: str, layout: KeyLayout | None = None, fix: bool = False,
                 head_concurrency: int = 16, hold_seconds: float = 60.0,
                 signed_head: SignedHead | None = None) -> None:
        self._bucket = bucket
        self._convex = convex
        self._source = source
        self._fix = fix
        self._store = S3ObjectStore(s3, signed_head)
        self._heads = asyncio.Semaphore(head_concurrency)
        # The daemon's layout (ASSET_KEY_LAYOUT): a fix must classify a key as its event would.
        self._dispatcher = Dispatcher(registry, HandlerContext(self._store, urls,
                                                               layout=layout or KeyLayout.default()),
                                      concurrency=head_concurrency)
        self._applier = ConvexApplier(convex, hold_seconds=hold_seconds)

    async def settle(self, drifts: list[Drift]) -> None:
        """Confirm ``gone`` by HeadObject; with fix, build and apply each repair."""
        changes = await asyncio.gather(*(self._change_for(d) for d in drifts))
        to_apply = [(d, c) for d, c in zip(drifts, changes, strict=True) if c is not None]
        if to_apply:
            results = await self._applier.apply([c for _, c in to_apply])
            for (drift, _), result in zip(to_apply, results, strict=True):
                if result.status == "applied" or result.status == "duplicate":
                    drift.outcome, drift.note = "fixed", result.status
                else:
                    drift.outcome = "unresolved"
                    drift.note = _why_not(drift, result.status, result.reason)

    async def _change_for(self, drift: Drift) -> Any:
        source = self._source
        try:
            checked_at = now_ms()
            async with self._heads:
                exists = await self._store.head(self._bucket, drift.key) is not None
            if drift.kind == "gone":
                if exists:
                    drift.outcome, drift.note = "resolved-itself", "the object exists now"
                    return None
                available = drift.record is not None and drift.record.get("status") == "available"
                if not self._fix:
                    drift.note = "would be marked missing" if available else None
                    return None
                if available:
                    await self._mark_missing(drift, checked_at)
                    return None
                event = ObjectEvent(REMOVED_EVENT, self._bucket, drift.key, checked_at, source=source)
            else:
                if not exists:  # deleted since it was listed: a fix would record a ghost
                    if drift.record is None or drift.record.get("status") == "deleted":
                        drift.outcome, drift.note = "resolved-itself", "deleted during the run"
                    else:
                        drift.outcome, drift.note = "unresolved", "deleted during the run; run again"
                    return None
                assert drift.s3 is not None
                event = ObjectEvent(CREATED_EVENT, self._bucket, drift.key, drift.s3.last_modified_ms,
                                    size=drift.s3.size, etag=drift.s3.etag, source=source)
            return await self._dispatcher.dispatch(event)
        except RetryableError:
            raise  # S3 or Convex is down: the run's answer would be wrong, stop it
        except (PermanentError, ValueError) as exc:
            drift.outcome, drift.note = "unresolved", f"cannot build the fix: {exc}"
            return None


    async def _mark_missing(self, drift: Drift, seen_at: int) -> None:
        assert drift.record is not None
        args: dict[str, Any] = {"bucket": self._bucket, "key": drift.key, "seenAt": seen_at}
        if drift.record.get("etag"):
            args["etag"] = drift.record["etag"]
        if await self._convex.mutation(MARK_MISSING, args) == "missing":
            drift.outcome, drift.note = "fixed", "marked missing"
        else:
            drift.outcome, drift.note = "unresolved", "the record changed meanwhile; run again"


def _why_not(drift: Drift, status: str, reason: str | None) -> str:
    if status != "stale":
        return f"{status}: {reason or ''}".strip(": ")
    held = (drift.record or {}).get("eventTime")
    if drift.s3 is not None and held is not None and held // 1000 == drift.s3.last_modified_ms // 1000:
        return ("stale: the record's event is in the same second as the object's LastModified "
                "(whole seconds), so it cannot be ordered after it")
    return "stale: Convex holds a newer event for this key"
