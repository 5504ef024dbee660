"""``s3convex assets``: what Convex holds for an object — the first thing an operator checks.

- ``show BUCKET/KEY``: the record (status, size, ETag, URL and whether it is still valid) and
  its history, newest first; a deleted object shows its tombstone and how it got there.
- ``list``: records by session, status or key prefix (indexes ``by_session``, ``by_status``,
  ``by_bucket_key``); a second filter is applied to the pages the first one returns.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.table import Table

from s3convex.adapters.convex import ConvexClient
from s3convex.adapters.convex_pages import convex_pages
from s3convex.consumer.ops.clients import clients
from s3convex.consumer.ops.output import (
    JsonOption,
    console,
    emit,
    human_bytes,
    iso_ms,
    now_ms,
)
from s3convex.core.errors import PermanentError
from s3convex.settings import AwsSettings, ConvexSettings, load

STATUSES = ("pending", "uploading", "available", "failed", "deleted",
            "cleanup_pending", "cleanup_failed", "missing")  # the last three: convex/LIFECYCLE.md
MAX_SCAN = 50_000  # records read by one `list` at most, whatever the filters


@dataclass
class AssetView:
    bucket: str
    key: str
    record: dict[str, Any] | None
    history: list[dict[str, Any]]

    def url_state(self, now: int) -> dict[str, Any] | None:
        if not self.record or not self.record.get("url"):
            return None
        expires = self.record.get("urlExpiresAt")
        return {"url": self.record["url"], "expiresAt": iso_ms(expires),
                "expired": expires is not None and expires <= now}

    def to_dict(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "key": self.key, "record": self.record,
                "url": self.url_state(now_ms()), "history": self.history}


def parse_location(text: str) -> tuple[str, str]:
    """``BUCKET/KEY`` or ``s3://BUCKET/KEY`` → (bucket, key). Bucket names have no "/"."""
    bucket, _, key = text.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise typer.BadParameter(f"{text!r}: expected BUCKET/KEY, e.g. video-assets/sessions/s1/a.mp4")
    return bucket, key


async def show_asset(convex: ConvexClient, bucket: str, key: str, *, history: int = 20) -> AssetView:
    record, rows = await asyncio.gather(
        convex.query("assets:getByKey", {"bucket": bucket, "key": key}),
        convex.query("assets:history", {"bucket": bucket, "key": key, "limit": history}),
    )
    return AssetView(bucket, key, record, rows)


@dataclass(frozen=True)
class AssetFilter:
    bucket: str
    session: str | None = None
    status: str | None = None
    prefix: str | None = None

    def source(self) -> tuple[str, dict[str, Any]]:
        """The indexed query to page through; the other filters apply to its pages."""
        if self.session is not None:
            return "assets:listBySession", {"sessionId": self.session}
        if self.status is not None:
            return "assets:listByStatus", {"status": self.status}
        args: dict[str, Any] = {"bucket": self.bucket}
        if self.prefix:
            args["prefix"] = self.prefix
        return "assets:listByBucket", args

    def matches(self, record: dict[str, Any]) -> bool:
        return (record.get("bucket") == self.bucket
                and (self.status is None or record.get("status") == self.status)
                and (not self.prefix or str(record.get("key", "")).startswith(self.prefix)))


async def list_assets(convex: ConvexClient, selection: AssetFilter, *, limit: int,
                      page_size: int = 200, max_scan: int = MAX_SCAN) -> tuple[list[dict[str, Any]], bool]:
    """Up to ``limit`` matching records, and whether more may exist beyond them."""
    found: list[dict[str, Any]] = []
    scanned = 0
    path, args = selection.source()
    async for page in convex_pages(convex, path, args, page_size=page_size):
        scanned += len(page.items)
        found.extend(r for r in page.items if selection.matches(r))
        if len(found) >= limit:
            return found[:limit], len(found) > limit or not page.is_done
        if page.is_done:
            return found, False
        if scanned >= max_scan:
            return found, True
    return found, False


# --- commands --------------------------------------------------------------------------------------

app = typer.Typer(name="assets", help="Read asset records from Convex.", no_args_is_help=True,
                  add_completion=False)


@app.command("show")
def show_command(
    location: Annotated[str, typer.Argument(metavar="BUCKET/KEY", help="e.g. video-assets/sessions/s1/a.mp4")],
    history: Annotated[int, typer.Option("--history", envvar="S3CONVEX_ASSETS_HISTORY", min=1, max=1000,
                                         help="History rows to show.")] = 20,
    json_output: JsonOption = False,
) -> None:
    """The record of one object (status, URL, metadata) and its history, newest first."""
    bucket, key = parse_location(location)
    convex_settings = load(ConvexSettings)

    async def fetch() -> AssetView:
        async with clients(convex=convex_settings) as opened:
            return await show_asset(opened.convex, bucket, key, history=history)

    view = asyncio.run(fetch())
    emit(view.to_dict(), json_output=json_output, render=_print_view)
    if view.record is None:
        raise PermanentError(f"no record for {bucket}/{key} in Convex")


@app.command("list")
def list_command(
    session: Annotated[str | None, typer.Option("--session", help="Only this session's assets.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="available, deleted or failed.")] = None,
    prefix: Annotated[str | None, typer.Option("--prefix", help="Only keys under this prefix.")] = None,
    bucket: Annotated[str | None, typer.Option("--bucket", help="Default: S3_BUCKET.")] = None,
    limit: Annotated[int, typer.Option("--limit", envvar="S3CONVEX_ASSETS_LIMIT", min=1, max=10_000)] = 50,
    json_output: JsonOption = False,
) -> None:
    """Asset records by session, status or key prefix."""
    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"--status must be one of {', '.join(STATUSES)}")
    convex_settings = load(ConvexSettings)
    selection = AssetFilter(bucket or load(AwsSettings).bucket, session, status, prefix)

    async def fetch() -> tuple[list[dict[str, Any]], bool]:
        async with clients(convex=convex_settings) as opened:
            return await list_assets(opened.convex, selection, limit=limit)

    records, more = asyncio.run(fetch())
    emit({"items": records, "more": more}, json_output=json_output, render=_print_list)


def _print_list(document: dict[str, Any]) -> None:
    records, more = document["items"], document["more"]
    table = Table(show_header=True, header_style="bold")
    for column in ("Key", "Status", "Size", "Type", "Session", "Updated"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(r["key"], _status(r["status"]), human_bytes(r.get("size")),
                      r.get("contentType") or "-", r.get("sessionId") or "-", iso_ms(r.get("updatedAt")))
    console().print(table)
    console().print(f"{len(records)} record(s)" + (" (more exist: raise --limit)" if more else ""))


def _status(status: str) -> str:
    color = {"available": "green", "deleted": "red", "failed": "yellow", "cleanup_failed": "yellow",
             "missing": "red", "cleanup_pending": "magenta"}.get(status, "")
    return f"[{color}]{status}[/{color}]" if color else status


def _print_view(view: dict[str, Any]) -> None:
    """The document of :meth:`AssetView.to_dict` as two tables: the record, its history."""
    out = console()
    record = view["record"]
    where = f"{view['bucket']}/{view['key']}"
    if record is None:
        out.print(f"[bold]{where}[/bold]: no record")
        return
    table = Table(title=where, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    size = record.get("size")
    rows: list[tuple[str, Any]] = [
        ("status", _status(record["status"])),
        ("size", f"{human_bytes(size)} ({size} B)" if size is not None else None),
        ("etag", f"{record.get('etag')} ({record.get('etagKind')})" if record.get("etag") else None),
        ("content type", record.get("contentType")),
        ("version id", record.get("versionId")),
        ("session / scene", " / ".join(str(record[k]) for k in ("sessionId", "sceneId") if record.get(k)) or None),
        ("kind / version", " / ".join(str(record[k]) for k in ("kind", "version") if record.get(k) is not None) or None),
        ("metadata", record.get("metadata")),
        ("last event", f"{record.get('lastEventName')} at {iso_ms(record.get('eventTime'))}"),
        ("revision", record.get("revision")),
        ("created / updated", f"{iso_ms(record.get('createdAt'))} / {iso_ms(record.get('updatedAt'))}"),
        ("deleted at", iso_ms(record.get("deletedAt"))),
        ("error", record.get("error") or record.get("urlError")),
        *_lifecycle_rows(record),
    ]
    url = view["url"]
    if url:
        rows.append(("url", url["url"]))
        rows.append(("url expires", "never" if url["expiresAt"] is None else
                     f"{url['expiresAt']}" + (" [red](expired)[/red]" if url["expired"] else "")))
    for name, value in rows:
        if value is not None:
            table.add_row(name, str(value) if not isinstance(value, str) else value)
    out.print(table)
    history = Table(title="history (newest first)", show_header=True, header_style="bold")
    for column in ("Rev", "Type", "Event", "Event time", "Size", "ETag", "Source"):
        history.add_column(column, overflow="fold")
    for row in view["history"]:
        history.add_row(str(row["revision"]), row["type"], row["eventName"], iso_ms(row["eventTime"]),
                        "-" if row.get("size") is None else str(row["size"]), row.get("etag") or "-",
                        row.get("source") or "-")
    out.print(history)


def _lifecycle_rows(record: dict[str, Any]) -> list[tuple[str, Any]]:
    """The tombstone's and the cleanup's side of a record (convex/LIFECYCLE.md)."""
    cleanup = record.get("cleanup") or {}
    rows: list[tuple[str, Any]] = [
        ("deleted by / why", " / ".join(str(record[k]) for k in ("deletedBy", "deleteReason")
                                        if record.get(k)) or None),
        ("missing since", iso_ms(record.get("missingSince"))),
    ]
    if cleanup:
        rows.append(("cleanup", f"{cleanup.get('cause')}: {int(cleanup.get('attempts', 0))} "
                     f"attempt(s), next {iso_ms(cleanup.get('nextAttemptAt'))}"
                     + (f", run {cleanup['runId']}" if cleanup.get("runId") else "")))
        rows.append(("cleanup error", cleanup.get("lastError")))
    return rows


def register(root: typer.Typer) -> None:
    """Mount as ``s3convex assets`` (see ``s3convex.consumer.cli.COMMAND_MODULES``)."""
    root.add_typer(app, name="assets")
