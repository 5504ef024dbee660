"""The merge: S3's listing and Convex's records as two sorted streams, and the drift between them.

Two sorted streams are walked side by side, a page at a time — S3's ``ListObjectsV2``
(:func:`s3_pages`) and Convex's ``assets:listByBucket`` (:func:`record_pages`) — so memory stays
bounded whatever the bucket's size. Both are in the same order: S3 lists keys in UTF-8 binary
order, Convex orders strings by their UTF-8 bytes (``compareUTF8`` in ``convex/values``, which
the local server uses too), and Python compares ``str`` by code point, which for valid Unicode
is the same order. Each stream is checked as it is read (:func:`ascending`); a key out of order
stops the run rather than report false drift. :func:`merge_by_key` pairs them, and :func:`judge`
— pure — names the :class:`Drift` of each pair: ``missing``, ``gone`` or ``changed``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from s3convex.adapters.convex import ConvexClient
from s3convex.adapters.convex_pages import convex_pages
from s3convex.consumer.ops.output import iso_ms, plain
from s3convex.core.errors import PermanentError

T = TypeVar("T")
LIST_BY_BUCKET = "assets:listByBucket"
DriftKind = Literal["missing", "gone", "changed"]


@dataclass(frozen=True, slots=True)
class S3Object:
    key: str
    size: int
    etag: str | None
    last_modified_ms: int


@dataclass(slots=True)
class Drift:
    kind: DriftKind
    key: str
    detail: str
    s3: S3Object | None = None
    record: dict[str, Any] | None = None
    outcome: Literal["fixed", "unresolved", "resolved-itself"] | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "key": self.key, "detail": self.detail,
            "s3": None if self.s3 is None else {
                "size": self.s3.size, "etag": self.s3.etag,
                "lastModified": iso_ms(self.s3.last_modified_ms)},
            "convex": None if self.record is None else {
                k: self.record.get(k) for k in ("status", "size", "etag", "eventTime", "lastEventName")},
            "outcome": self.outcome, "note": self.note,
        }


def judge(obj: S3Object | None, record: dict[str, Any] | None) -> Drift | None:
    """The drift between what S3 lists and what Convex records for one key, if any. Pure."""
    if obj is not None and record is None:
        return Drift("missing", obj.key, "no record in Convex", obj, None)
    if obj is None and record is not None:
        # A tombstone, or an upload still in flight (or failed) whose object S3 never had:
        # revision 0 means no S3 event was ever applied, so there is nothing to have gone.
        if record.get("status") == "deleted" or record.get("revision") == 0:
            return None
        # On its way out of S3 (convex/LIFECYCLE.md): the cleanup tombstones it. Or already
        # marked missing (R4.5): Convex and S3 agree there is no object (the run counts these).
        if record.get("status") in ("cleanup_pending", "cleanup_failed", "missing"):
            return None
        return Drift("gone", record["key"], f"record is {record.get('status')}, object not in S3",
                     None, record)
    assert obj is not None and record is not None
    if record.get("status") in ("cleanup_pending", "cleanup_failed"):
        return None  # waiting for the cleanup worker (its grace, its backoff)
    if record.get("status") == "deleted":
        return Drift("missing", obj.key, "record is a tombstone, object exists", obj, record)
    if record.get("status") == "missing":  # put back in S3 without an event reaching us
        return Drift("missing", obj.key, "record is marked missing, object exists", obj, record)
    differences = []
    if record.get("size") != obj.size:
        differences.append(f"size {record.get('size')} → {obj.size}")
    if record.get("etag") and obj.etag and record["etag"] != obj.etag:
        differences.append(f"etag {record['etag']} → {obj.etag}")
    if differences:
        return Drift("changed", obj.key, ", ".join(differences), obj, record)
    return None


def effective_prefix(notification_prefix: str, requested: str | None) -> str | None:
    """The listing prefix: within what notifications cover (the consumer never syncs keys
    outside it), narrowed by ``--prefix``; None when the two cannot overlap."""
    requested = requested or ""
    if requested.startswith(notification_prefix):
        return requested
    if notification_prefix.startswith(requested):
        return notification_prefix
    return None


# --- the two streams ---------------------------------------------------------------------------

async def s3_pages(s3: Any, bucket: str, prefix: str, page_size: int) -> AsyncIterator[list[S3Object]]:
    """ListObjectsV2 pages of raw keys, each continued with ``StartAfter`` = the last key seen.

    Same keys in the same order as following ``ContinuationToken`` with botocore's default
    ``EncodingType=url``, but that path is broken on LocalStack 4.14 for non-ASCII keys: its
    continuation token cannot hold one (``'ascii' codec can't decode``), and with url encoding
    it compares StartAfter with *encoded* keys, silently skipping keys after ``%``-escapes.
    Raw keys + StartAfter are right on AWS, moto and LocalStack alike; the price is that a key
    holding a character XML 1.0 cannot carry (control characters) fails the listing loudly.
    """
    s3.meta.events.register_last("before-parameter-build.s3.ListObjectsV2", _raw_keys,
                                 unique_id="s3convex-raw-listing")
    after = ""
    while True:
        page = await s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=page_size,
                                        StartAfter=after)
        items = [S3Object(key=item["Key"], size=int(item.get("Size", 0)),
                          etag=str(item["ETag"]).strip('"') if item.get("ETag") else None,
                          last_modified_ms=_ms(item["LastModified"]))
                 for item in page.get("Contents", [])]
        if items:
            yield items
        if not page.get("IsTruncated") or not items:
            return
        after = items[-1].key


def _raw_keys(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """Undo botocore's automatic ``EncodingType=url`` (and so its decoding of the answer)."""
    if context.pop("encoding_type_auto_set", False):
        params.pop("EncodingType", None)


_RECORD_FIELDS = ("key", "status", "size", "etag", "eventTime", "lastEventName")


async def record_pages(convex: ConvexClient, bucket: str, prefix: str,
                       page_size: int) -> AsyncIterator[list[dict[str, Any]]]:
    """``assets:listByBucket`` pages, each record cut to the fields :func:`judge` reads (its
    numbers whole: a drift's detail says ``size 5 → 6``, not ``5.0``)."""
    args: dict[str, Any] = {"bucket": bucket}
    if prefix:
        args["prefix"] = prefix
    async for page in convex_pages(convex, LIST_BY_BUCKET, args, page_size=page_size):
        yield [plain({k: doc.get(k) for k in _RECORD_FIELDS}) for doc in page.items]


_END = object()


async def prefetched(pages: AsyncIterator[list[T]], depth: int = 2) -> AsyncIterator[T]:
    """Items of ``pages``, with up to ``depth`` pages fetched ahead in a background task:
    S3 and Convex are read concurrently while memory stays at a few pages."""
    queue: asyncio.Queue[Any] = asyncio.Queue(depth)

    async def produce() -> None:
        try:
            async for page in pages:
                await queue.put(page)
            await queue.put(_END)
        except Exception as exc:
            await queue.put(exc)

    task = asyncio.create_task(produce(), name="prefetch")
    try:
        while (page := await queue.get()) is not _END:
            if isinstance(page, Exception):
                raise page
            for item in page:
                yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def ascending(items: AsyncIterator[T], key: Callable[[T], str], what: str) -> AsyncIterator[T]:
    """Pass items through, refusing any whose key does not sort after the previous one."""
    previous: str | None = None
    async for item in items:
        current = key(item)
        if previous is not None and current <= previous:
            raise PermanentError(f"{what} is not in UTF-8 key order: {current!r} after {previous!r}")
        previous = current
        yield item


async def merge_by_key(objects: AsyncIterator[S3Object], records: AsyncIterator[dict[str, Any]],
                       ) -> AsyncIterator[tuple[S3Object | None, dict[str, Any] | None]]:
    """Pairs (object, record) in key order; either side None where the other has no match."""
    obj = await anext(objects, None)
    rec = await anext(records, None)
    while obj is not None or rec is not None:
        if rec is None or (obj is not None and obj.key < rec["key"]):
            yield obj, None
            obj = await anext(objects, None)
        elif obj is None or rec["key"] < obj.key:
            yield None, rec
            rec = await anext(records, None)
        else:
            yield obj, rec
            obj, rec = await anext(objects, None), await anext(records, None)


def _ms(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)
