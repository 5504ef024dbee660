"""``s3convex reconcile``: prove that S3 and Convex agree, and repair them where they do not.

Two sorted streams are walked side by side, a page at a time — S3's ``ListObjectsV2`` and
Convex's ``assets:listByBucket`` — so memory stays bounded whatever the bucket's size. Both
are in the same order: S3 lists keys in UTF-8 binary order, Convex orders strings by their
UTF-8 bytes (``compareUTF8`` in ``convex/values``, which the local server uses too), and
Python compares ``str`` by code point, which for valid Unicode is the same order. Each stream
is checked as it is read; a key out of order stops the run rather than report false drift.

Three kinds of drift:

- ``missing``: the object exists, Convex has no record or a tombstone for it;
- ``gone``: Convex says available, the object is not there (confirmed by HeadObject);
- ``changed``: both exist, size or ETag differ.

``--fix`` repairs through the consumer's own path — the handlers build the same
:class:`~handlers.asset.AssetChange` (HeadObject, URL) and ``assets:applyEvents`` applies it —
so ordering and idempotency hold: a ``created`` change carries the object's ``LastModified``
as its eventTime and a ``removed`` one the moment its absence was confirmed, and a real event
newer than either still wins. Such a fix comes back ``stale`` and is reported as unresolved.
S3 gives ``LastModified`` in whole seconds: a write within the same second as the event the
record holds cannot be ordered after it, and is reported as unresolved too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from rich.table import Table

from consumer.apply import ConvexApplier
from consumer.aws import map_aws_error
from consumer.convex_client import ConvexClient
from consumer.dispatch import Dispatcher
from consumer.errors import PermanentError, RetryableError
from consumer.models import ObjectEvent
from consumer.ops.output import (
    JsonOption,
    console,
    iso_ms,
    new_run_id,
    now_ms,
    print_json,
    progress,
    wants_json,
)
from handlers.context import HandlerContext
from handlers.layout import KeyLayout
from handlers.objects import registry
from handlers.store import S3ObjectStore
from handlers.urls import UrlSource

T = TypeVar("T")
LIST_BY_BUCKET = "assets:listByBucket"
CREATED_EVENT = "ObjectCreated:Reconcile"
REMOVED_EVENT = "ObjectRemoved:Reconcile"
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
        if record.get("status") == "deleted":
            return None
        return Drift("gone", record["key"], f"record is {record.get('status')}, object not in S3",
                     None, record)
    assert obj is not None and record is not None
    if record.get("status") == "deleted":
        return Drift("missing", obj.key, "record is a tombstone, object exists", obj, record)
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
        try:
            page = await s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=page_size,
                                            StartAfter=after)
        except Exception as exc:
            raise map_aws_error(exc, "ListObjectsV2") from exc
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


async def convex_pages(convex: ConvexClient, bucket: str, prefix: str,
                       page_size: int) -> AsyncIterator[list[dict[str, Any]]]:
    cursor: str | None = None
    while True:
        args: dict[str, Any] = {"bucket": bucket,
                                "paginationOpts": {"numItems": page_size, "cursor": cursor}}
        if prefix:
            args["prefix"] = prefix
        page = await convex.query(LIST_BY_BUCKET, args)
        yield [{k: _whole(doc.get(k)) for k in ("key", "status", "size", "etag", "eventTime",
                                                "lastEventName")}
               for doc in page["page"]]
        if page["isDone"]:
            return
        cursor = page["continueCursor"]


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


# --- the run -------------------------------------------------------------------------------------

@dataclass
class ReconcileSummary:
    run_id: str
    bucket: str
    prefix: str | None
    fix: bool
    started_ms: int = field(default_factory=now_ms)
    finished_ms: int | None = None
    objects: int = 0
    records: int = 0
    missing: int = 0
    gone: int = 0
    changed: int = 0
    fixed: int = 0
    unresolved: int = 0
    resolved_itself: int = 0

    @property
    def drift(self) -> int:
        return self.missing + self.gone + self.changed

    @property
    def consistent(self) -> bool:
        return self.drift == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "runId": self.run_id, "bucket": self.bucket, "prefix": self.prefix, "fix": self.fix,
            "consistent": self.consistent, "objects": self.objects, "records": self.records,
            "drift": self.drift, "missing": self.missing, "gone": self.gone, "changed": self.changed,
            "fixed": self.fixed, "unresolved": self.unresolved, "resolvedItself": self.resolved_itself,
            "startedAt": iso_ms(self.started_ms), "finishedAt": iso_ms(self.finished_ms),
            "seconds": None if self.finished_ms is None else (self.finished_ms - self.started_ms) / 1000,
        }


class Reconciler:
    """Compare one bucket (under a prefix) with Convex; with ``fix``, repair the drift.

    Drift is reported through ``on_drift`` as it is found (and, when fixing or confirming,
    once its batch is settled), so nothing grows with the bucket but the counters.
    """

    def __init__(self, s3: Any, convex: ConvexClient, bucket: str, *, urls: UrlSource,
                 layout: KeyLayout | None = None, prefix: str = "", suffix: str = "",
                 fix: bool = False, page_size: int = 1000, convex_page_size: int = 500,
                 head_concurrency: int = 16, batch_size: int = 200,
                 hold_seconds: float = 60.0) -> None:
        self._s3 = s3
        self._convex = convex
        self._bucket = bucket
        self._prefix = prefix
        self._suffix = suffix
        self._fix = fix
        self._page_size = page_size
        self._convex_page_size = convex_page_size
        self._batch_size = batch_size
        self._store = S3ObjectStore(s3)
        self._heads = asyncio.Semaphore(head_concurrency)
        # The daemon's layout (ASSET_KEY_LAYOUT): a fix must classify a key as its event would.
        self._dispatcher = Dispatcher(registry, HandlerContext(self._store, urls,
                                                               layout=layout or KeyLayout.default()),
                                      concurrency=head_concurrency)
        self._applier = ConvexApplier(convex, hold_seconds=hold_seconds)
        self.summary = ReconcileSummary(run_id=new_run_id(), bucket=bucket, prefix=prefix, fix=fix)

    async def run(self, on_drift: Callable[[Drift], None] = lambda _d: None,
                  on_progress: Callable[[ReconcileSummary], None] = lambda _s: None) -> ReconcileSummary:
        summary = self.summary
        objects = ascending(prefetched(s3_pages(self._s3, self._bucket, self._prefix, self._page_size)),
                            lambda o: o.key, "the S3 listing")
        records = ascending(prefetched(convex_pages(self._convex, self._bucket, self._prefix,
                                                    self._convex_page_size)),
                            lambda r: r["key"], "Convex's listByBucket")
        pending: list[Drift] = []
        seen = 0
        async for obj, record in merge_by_key(objects, records):
            key = obj.key if obj is not None else record["key"]  # type: ignore[index]
            if not key.endswith(self._suffix):
                continue
            summary.objects += obj is not None
            summary.records += record is not None
            seen += 1
            if seen % 1000 == 0:
                on_progress(summary)
            drift = judge(obj, record)
            if drift is None:
                continue
            if drift.kind != "gone" and not self._fix:
                self._count(drift)
                on_drift(drift)
                continue
            pending.append(drift)
            if len(pending) >= self._batch_size:
                await self._settle(pending, on_drift)
                pending = []
        if pending:
            await self._settle(pending, on_drift)
        summary.finished_ms = now_ms()
        on_progress(summary)
        return summary

    def _count(self, drift: Drift) -> None:
        setattr(self.summary, drift.kind, getattr(self.summary, drift.kind) + 1)

    async def _settle(self, drifts: list[Drift], on_drift: Callable[[Drift], None]) -> None:
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
        for drift in drifts:
            if drift.outcome == "resolved-itself":
                self.summary.resolved_itself += 1
                continue
            self._count(drift)
            if drift.outcome == "fixed":
                self.summary.fixed += 1
            elif drift.outcome == "unresolved":
                self.summary.unresolved += 1
            on_drift(drift)

    async def _change_for(self, drift: Drift) -> Any:
        source = f"reconcile:{self.summary.run_id}"
        try:
            checked_at = now_ms()
            async with self._heads:
                exists = await self._store.head(self._bucket, drift.key) is not None
            if drift.kind == "gone":
                if exists:
                    drift.outcome, drift.note = "resolved-itself", "the object exists now"
                    return None
                if not self._fix:
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


def _why_not(drift: Drift, status: str, reason: str | None) -> str:
    if status != "stale":
        return f"{status}: {reason or ''}".strip(": ")
    held = (drift.record or {}).get("eventTime")
    if drift.s3 is not None and held is not None and held // 1000 == drift.s3.last_modified_ms // 1000:
        return ("stale: the record's event is in the same second as the object's LastModified "
                "(whole seconds), so it cannot be ordered after it")
    return "stale: Convex holds a newer event for this key"


def _whole(value: Any) -> Any:
    """Convex's JSON writes whole-number floats as ``13.0``; numbers here are whole."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _ms(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)


# --- the command -----------------------------------------------------------------------------------

def reconcile_command(
    prefix: Annotated[str | None, typer.Option(
        "--prefix", envvar="S3CONVEX_RECONCILE_PREFIX",
        help="Only keys under this prefix (within S3_NOTIFICATION_PREFIX).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run/--fix", help="Report only (default), or repair through assets:applyEvents.")] = True,
    page_size: Annotated[int, typer.Option("--page-size", envvar="S3CONVEX_RECONCILE_PAGE_SIZE",
                                           min=1, max=1000, help="Keys per S3 and Convex page.")] = 1000,
    head_concurrency: Annotated[int, typer.Option("--head-concurrency", min=1, max=256)] = 16,
    show: Annotated[int, typer.Option("--show", min=0, help="Print at most this many drift items.")] = 1000,
    report: Annotated[Path | None, typer.Option(
        "--report", help="Also write every drift item to this JSONL file.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Compare S3 with Convex (missing, gone, changed); exit 0 consistent, 1 drift found."""
    from consumer.aws import open_clients
    from consumer.config import load_settings
    from consumer.daemon import url_source

    settings = load_settings()
    listing_prefix = effective_prefix(settings.s3_notification_prefix, prefix)
    shown: list[Drift] = []

    async def run() -> ReconcileSummary:
        async with (
            open_clients(settings, max_pool_connections=head_concurrency + 8) as aws,
            ConvexClient(settings.convex_base_url, settings.convex_deploy_key,
                         timeout=settings.convex_timeout) as convex,
        ):
            reconciler = Reconciler(aws.s3, convex, settings.s3_bucket, urls=url_source(settings, aws),
                                    layout=settings.key_layout, prefix=listing_prefix or "",
                                    suffix=settings.s3_notification_suffix,
                                    fix=not dry_run, page_size=page_size,
                                    convex_page_size=min(page_size, 500),
                                    head_concurrency=head_concurrency)
            if listing_prefix is None:  # --prefix lies outside what notifications cover
                reconciler.summary.finished_ms = now_ms()
                return reconciler.summary
            with contextlib.ExitStack() as stack:
                out = stack.enter_context(report.open("w", encoding="utf-8")) if report else None
                bar = stack.enter_context(progress("reconciling"))

                def on_drift(drift: Drift) -> None:
                    if len(shown) < show:
                        shown.append(drift)
                    if out is not None:
                        out.write(json.dumps(drift.to_dict(), ensure_ascii=False) + "\n")

                return await reconciler.run(
                    on_drift, lambda s: bar.update(s.objects, None,
                                                   f"records {s.records} drift {s.drift}"))

    summary = asyncio.run(run())
    if wants_json(json_output):
        print_json({**summary.to_dict(), "items": [d.to_dict() for d in shown],
                    "itemsTruncated": summary.drift > len(shown)})
    else:
        _print_table(summary, shown)
    raise typer.Exit(0 if summary.consistent else 1)


def _print_table(summary: ReconcileSummary, drifts: list[Drift]) -> None:
    out = console()
    if drifts:
        table = Table(show_header=True, header_style="bold")
        for column in ("Kind", "Key", "Detail", "Outcome"):
            table.add_column(column, overflow="fold")
        for d in drifts:
            table.add_row(d.kind, d.key, d.detail, " ".join(filter(None, [d.outcome, d.note])) or "-")
        out.print(table)
    line = (f"{summary.objects} objects, {summary.records} records under "
            f"{summary.bucket}/{summary.prefix or ''}: ")
    if summary.consistent:
        out.print(line + "[green]consistent[/green]")
    else:
        out.print(line + f"[red]{summary.drift} drift[/red] ({summary.missing} missing, "
                  f"{summary.gone} gone, {summary.changed} changed)"
                  + (f"; fixed {summary.fixed}, unresolved {summary.unresolved}" if summary.fix else
                     "; run with --fix to repair"))
    if summary.resolved_itself:
        out.print(f"{summary.resolved_itself} difference(s) settled during the run (objects written "
                  "or deleted meanwhile) were not counted")


def register(root: typer.Typer) -> None:
    """Mount as ``s3convex reconcile`` (see ``consumer.cli.COMMAND_MODULES``)."""
    root.command("reconcile")(reconcile_command)
