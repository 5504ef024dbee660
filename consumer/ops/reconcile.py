"""``s3convex reconcile``: prove that S3 and Convex agree, and repair them where they do not.

Two sorted streams are walked side by side, a page at a time — S3's ``ListObjectsV2`` and
Convex's ``assets:listByBucket`` — so memory stays bounded whatever the bucket's size; a key out
of order in either stops the run rather than report false drift. Three kinds of drift:

- ``missing``: the object exists, Convex has no record or a tombstone for it;
- ``gone``: Convex says available, the object is not there (confirmed by HeadObject);
  ``--fix`` marks it ``missing`` (with the time seen) rather than tombstoning it, and every run
  counts the records so marked (``markedMissing``): S3 lost them, no fix can bring them back;
- ``changed``: both exist, size or ETag differ.

``--fix`` repairs through the consumer's own path (handlers, then ``assets:applyEvents``), so
ordering and idempotency hold: a real event newer than the fix still wins, and the fix is
reported as unresolved.

This module holds only the command: it parses flags, opens the clients and prints. The work is
in :mod:`s3convex.consumer.ops.reconcile_merge` (the two streams and the drift between them),
:mod:`s3convex.consumer.ops.reconciler` (the run and its summary) and
:mod:`s3convex.consumer.ops.reconcile_fixer` (drift turned into events); ``S3Object``, ``judge`` and
``s3_pages`` stay importable from here (``s3convex.consumer.ops.health`` uses them).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from s3convex.consumer.ops.clients import clients
from s3convex.consumer.ops.output import (
    JsonOption,
    console,
    emit,
    json_line,
    now_ms,
    progress,
)
from s3convex.consumer.ops.reconcile_merge import Drift, S3Object, effective_prefix, judge, s3_pages
from s3convex.consumer.ops.reconciler import Reconciler, ReconcileSummary

__all__ = ["S3Object", "judge", "reconcile_command", "register", "s3_pages"]


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
    from s3convex.adapters.urls import url_source
    from s3convex.settings import load_settings

    settings = load_settings()
    listing_prefix = effective_prefix(settings.aws.notification_prefix, prefix)
    shown: list[Drift] = []

    async def run() -> ReconcileSummary:
        async with clients(aws=settings.aws, convex=settings.convex,
                           max_pool_connections=head_concurrency + 8) as opened:
            aws, convex = opened.aws, opened.convex
            reconciler = Reconciler(aws.s3, convex, settings.aws.bucket, urls=url_source(settings.urls, aws),
                                    layout=settings.aws.key_layout, prefix=listing_prefix or "",
                                    suffix=settings.aws.notification_suffix,
                                    fix=not dry_run, page_size=page_size,
                                    convex_page_size=min(page_size, 500),
                                    head_concurrency=head_concurrency,
                                    signed_head=aws.signed_head)
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
                        out.write(json_line(drift.to_dict()) + "\n")

                return await reconciler.run(
                    on_drift, lambda s: bar.update(s.objects, None,
                                                   f"records {s.records} drift {s.drift}"))

    summary = asyncio.run(run())
    emit({**summary.to_dict(), "items": [d.to_dict() for d in shown],
          "itemsTruncated": summary.drift > len(shown)}, json_output=json_output, render=_print_table)
    raise typer.Exit(0 if summary.consistent else 1)


def _print_table(document: dict[str, Any]) -> None:
    """The document of the run (:meth:`ReconcileSummary.to_dict` and its drift items)."""
    out = console()
    if document["items"]:
        table = Table(show_header=True, header_style="bold")
        for column in ("Kind", "Key", "Detail", "Outcome"):
            table.add_column(column, overflow="fold")
        for d in document["items"]:
            table.add_row(d["kind"], d["key"], d["detail"],
                          " ".join(filter(None, [d["outcome"], d["note"]])) or "-")
        out.print(table)
    line = (f"{document['objects']} objects, {document['records']} records under "
            f"{document['bucket']}/{document['prefix'] or ''}: ")
    if document["consistent"]:
        out.print(line + "[green]consistent[/green]")
    else:
        out.print(line + f"[red]{document['drift']} drift[/red] ({document['missing']} missing, "
                  f"{document['gone']} gone, {document['changed']} changed)"
                  + (f"; fixed {document['fixed']}, unresolved {document['unresolved']}"
                     if document["fix"] else "; run with --fix to repair"))
    if document["markedMissing"]:
        out.print(f"{document['markedMissing']} record(s) marked missing: S3 lost their objects "
                  "(assets list --status missing)")
    if document["resolvedItself"]:
        out.print(f"{document['resolvedItself']} difference(s) settled during the run (objects "
                  "written or deleted meanwhile) were not counted")


def register(root: typer.Typer) -> None:
    """Mount as ``s3convex reconcile`` (see ``s3convex.consumer.cli.COMMAND_MODULES``)."""
    root.command("reconcile")(reconcile_command)
