"""``s3convex cleanup``: one pass of the cleanup worker, now (consumer/cleanup.py).

    s3convex cleanup [--dry-run] [--session S] [--limit N]   remove what is due from S3
    s3convex cleanup --retry-failed [--session S]            cleanup_failed records: pending again
    s3convex cleanup --runs                                  the latest runs (the audit trail)

What is due: records ``cleanup_pending`` whose grace (Convex's ``CLEANUP_GRACE_SECONDS``) and
backoff have passed. ``--dry-run`` lists what would go and changes nothing (its run is audited
too). Exit 0 even when some keys failed: they stay pending with their error and backoff, and the
report says which (``s3convex health`` warns about those given up on).
"""

from __future__ import annotations

import asyncio
import getpass
import socket
from typing import Annotated, Any

import typer
from rich.table import Table

from s3convex.consumer.cleanup import CleanupWorker
from s3convex.consumer.ops.clients import clients
from s3convex.consumer.ops.output import JsonOption, console, emit, human_bytes, iso_ms
from s3convex.settings import AwsSettings, CleanupSettings, ConvexSettings, load

MAX_LISTED = 50


def cleanup_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go; change nothing.")] = False,
    session: Annotated[str | None, typer.Option("--session", help="Only this session's assets.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", envvar="S3CONVEX_CLEANUP_LIMIT", min=1,
                                              help="At most this many records.")] = None,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="Put cleanup_failed records back to pending (due now).")] = False,
    runs: Annotated[bool, typer.Option("--runs", help="Show the latest cleanup runs.")] = False,
    actor: Annotated[str | None, typer.Option("--actor", envvar="S3CONVEX_ACTOR",
                                              help="Who runs it (for the audit).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Remove from S3 what Convex marked for cleanup and whose grace has passed."""
    aws, convex_settings = load(AwsSettings), load(ConvexSettings)
    settings = load(CleanupSettings)
    operator = actor or f"{getpass.getuser()}@{socket.gethostname()}"

    async def main() -> dict[str, Any]:
        async with clients(aws=aws, convex=convex_settings, max_pool_connections=8) as opened:
            if runs:
                return {"runs": await opened.convex.query("lifecycle:runs", {"limit": limit or 20})}
            if retry_failed:
                args: dict[str, Any] = {"limit": min(limit or 1000, 1000)}
                if session:
                    args["sessionId"] = session
                return {"retried": await opened.convex.mutation("lifecycle:retryFailed", args)}
            worker = CleanupWorker(opened.convex, opened.aws.s3, bucket=aws.bucket,
                                   layout=aws.key_layout, settings=settings, operator=operator)
            report = await worker.run_once(dry_run=dry_run, session=session, limit=limit)
            return report.to_dict()

    emit(asyncio.run(main()), json_output=json_output, render=_render)


def _render(document: dict[str, Any]) -> None:
    out = console()
    if "runs" in document:
        table = Table(title="cleanup runs (newest first)", header_style="bold")
        for column in ("Run", "Operator", "Status", "Deleted", "Bytes", "Failed", "Gave up", "Started"):
            table.add_column(column, overflow="fold")
        for run in document["runs"]:
            table.add_row(run["runId"], run["operator"], run["status"] + (" (dry run)" if run["dryRun"] else ""),
                          str(run["deleted"]), human_bytes(run["bytesDeleted"]), str(run["failed"]),
                          str(run["gaveUp"]), iso_ms(run["startedAt"]) or "-")
        out.print(table)
        return
    if "retried" in document:
        out.print(f"{document['retried']} cleanup_failed record(s) pending again, due now")
        return
    if document["dryRun"]:
        listed = document["wouldDelete"]
        total = sum(item["size"] for item in listed)
        table = Table(title=f"would delete {len(listed)} object(s), {human_bytes(total)}",
                      header_style="bold")
        for column in ("Key", "Size", "Cause", "Attempts"):
            table.add_column(column, overflow="fold")
        for item in listed[:MAX_LISTED]:
            table.add_row(item["key"], human_bytes(item["size"]), item["cause"], str(item["attempts"]))
        out.print(table)
        if len(listed) > MAX_LISTED:
            out.print(f"… and {len(listed) - MAX_LISTED} more (--json lists all)")
        return
    out.print(f"run {document['runId']}: deleted {document['deleted']} object(s) "
              f"({human_bytes(document['bytesDeleted'])}), {document['failed']} failed "
              f"({document['gaveUp']} given up), {document['skipped']} refused")
    for error in document["errors"]:
        out.print(f"  [yellow]{error['code']}[/yellow] {error['key']}")


def register(root: typer.Typer) -> None:
    """Mount as ``s3convex cleanup`` (see ``s3convex.consumer.cli.COMMAND_MODULES``)."""
    root.command("cleanup")(cleanup_command)
