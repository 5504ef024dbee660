"""``s3convex replay``: see what failed, fix it, put it back — without losing a message.

AWS's own redrive (StartMessageMoveTask) moves everything, unfiltered, at ≤ 500 msg/s, with
no dry run. Here:

- ``list`` / ``show`` look at DLQ messages and put them back (visibility restored at once);
- ``replay`` moves the selected ones to the source queue: each is *sent* first and deleted
  from the DLQ only once the send succeeded, so a crash in between leaves a duplicate (applying
  is idempotent), never a loss. Body and attributes travel unchanged, plus
  ``s3convex.replay-count``. ``--dry-run`` selects exactly as a run would and changes nothing;
  a real run writes an audit row to Convex (``operations:recordReplayRun``) before it moves
  anything and again with its outcome;
- ``export`` writes messages to JSONL, ``import`` sends (edited) lines back — to the DLQ by
  default, replacing the originals they came from, or straight to the source queue;
- ``runs`` lists the audit rows.

This module holds only the commands: they parse flags, open the clients and print. The work is
in :mod:`s3convex.consumer.ops.replayer` (the mover), :mod:`s3convex.consumer.ops.replay_audit` (the audit row)
and :mod:`s3convex.consumer.ops.dlq_files` (export and import), which return plain reports;
``Replayer``, ``ReplayAudit`` and ``audited`` stay importable from here (the benchmark
uses them).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from s3convex.consumer.ops.clients import OpsClients, clients
from s3convex.consumer.ops.dlq import Selection
from s3convex.consumer.ops.dlq_files import Importer, ImportReport, export_messages
from s3convex.consumer.ops.output import (
    JsonOption,
    console,
    emit,
    human_age,
    iso_ms,
    new_run_id,
    now_ms,
    parse_duration,
    parse_rate,
    progress,
)
from s3convex.consumer.ops.replay_audit import LIST_RUNS, ReplayAudit, audited
from s3convex.consumer.ops.replayer import Replayer, ReplayReport
from s3convex.core.errors import PermanentError

T = TypeVar("T")

app = typer.Typer(
    name="replay",
    help="Inspect the dead-letter queue, edit messages, and move them back to the source queue.",
    no_args_is_help=True,
    add_completion=False,
)

KeyOption = Annotated[list[str] | None, typer.Option(
    "--key", help="Object key glob (fnmatch; * crosses /). Repeat for any-of.")]
EventOption = Annotated[list[str] | None, typer.Option(
    "--event", help="Event name glob, e.g. 'ObjectCreated:*'. Repeat for any-of.")]
ReasonOption = Annotated[list[str] | None, typer.Option(
    "--reason", help="Failure reason contains this text (case-insensitive). Repeat for any-of.")]
IdOption = Annotated[list[str] | None, typer.Option(
    "--id", help="DLQ message id or original message id. Repeat for any-of.")]
OlderOption = Annotated[str | None, typer.Option(
    "--older-than", help="Only messages in the DLQ at least this long (90s, 15m, 2h, 7d).")]
NewerOption = Annotated[str | None, typer.Option(
    "--newer-than", help="Only messages in the DLQ at most this long.")]
VisibilityOption = Annotated[int, typer.Option(
    "--visibility", envvar="S3CONVEX_REPLAY_VISIBILITY", min=5, max=43200,
    help="Seconds a looked-at message stays hidden between heartbeats (released at the end).")]
WaitOption = Annotated[int, typer.Option(
    "--wait", envvar="S3CONVEX_REPLAY_WAIT", min=0, max=20,
    help="Long-poll seconds per receive; two empty receives end a scan.")]
RateOption = Annotated[str | None, typer.Option(
    "--rate", envvar="S3CONVEX_REPLAY_RATE", help="At most this many messages per second (50/s, 3000/m).")]


def _selection(keys: list[str] | None, events: list[str] | None, reasons: list[str] | None,
               ids: list[str] | None, older: str | None, newer: str | None) -> Selection:
    return Selection(
        keys=tuple(keys or ()), events=tuple(events or ()), reasons=tuple(reasons or ()),
        message_ids=tuple(ids or ()),
        older_than_s=parse_duration(older) if older else None,
        newer_than_s=parse_duration(newer) if newer else None,
    )


def _run(work: Callable[[OpsClients], Awaitable[T]], *, need_convex: bool = False) -> T:
    """Run ``work`` with the AWS clients and the resolved queue and DLQ (and, with
    ``need_convex``, a Convex client: only what writes the audit row needs Convex settings)."""
    from s3convex.settings import AwsSettings, ConvexSettings, SqsSettings, load

    aws_settings, sqs_settings = load(AwsSettings), load(SqsSettings)
    convex_settings = load(ConvexSettings) if need_convex else None

    async def run() -> T:
        async with clients(aws=aws_settings, sqs=sqs_settings, convex=convex_settings,
                           max_pool_connections=32) as opened:
            return await work(opened)

    return asyncio.run(run())


def _messages_table(messages: list[dict[str, Any]], title: str) -> Table:
    """DLQ messages as :meth:`DlqMessage.summary` documents them."""
    table = Table(title=title, show_header=True, header_style="bold")
    for column in ("Age", "Recv", "Bucket/key", "Event", "Reason", "Message id"):
        table.add_column(column, overflow="fold")
    for m in messages:
        keys = m["keys"][0] if m["keys"] else "-"
        if len(m["keys"]) > 1:
            keys += f" (+{len(m['keys']) - 1})"
        where = f"{m['buckets'][0]}/{keys}" if m["buckets"] else keys
        reason = m["reason"] or ("(moved by SQS redrive)" if m["sourceArn"] else "-")
        table.add_row(human_age(m["ageSeconds"]), str(m["receiveCount"] or m["dlqReceiveCount"]),
                      where, ", ".join(m["events"]) or "-", reason, m["messageId"])
    return table


@app.command("list")
def list_command(
    key: KeyOption = None, event: EventOption = None, reason: ReasonOption = None,
    id_: IdOption = None, older_than: OlderOption = None, newer_than: NewerOption = None,
    limit: Annotated[int, typer.Option("--limit", envvar="S3CONVEX_REPLAY_LIST_LIMIT", min=1,
                                       help="Show at most this many.")] = 200,
    visibility: VisibilityOption = 60, wait: WaitOption = 1, json_output: JsonOption = False,
) -> None:
    """DLQ messages: age, receive count, bucket/key, event, failure reason, message id."""
    selection = _selection(key, event, reason, id_, older_than, newer_than)

    async def work(opened: OpsClients) -> ReplayReport:
        replayer = Replayer(opened.aws.sqs, opened.queues.dlq_url, opened.queues.url,
                            selection=selection, dry_run=True, concurrency=1,
                            visibility_timeout=visibility, wait_seconds=wait, keep_matching=limit)
        return await replayer.run()

    report = _run(work)
    emit({"dlq": report.source, "examined": report.examined, "matching": report.selected,
          "shown": len(report.matching), "messages": report.to_dict()["messages"]},
         json_output=json_output, render=_print_list)


def _print_list(document: dict[str, Any]) -> None:
    console().print(_messages_table(document["messages"], document["dlq"]))
    console().print(f"{document['matching']} of {document['examined']} messages match"
                    + (f"; showing {document['shown']}" if document["shown"] < document["matching"] else ""))


@app.command("show")
def show_command(
    message_id: Annotated[str, typer.Argument(help="DLQ message id or original message id.")],
    visibility: VisibilityOption = 60, wait: WaitOption = 1, json_output: JsonOption = False,
) -> None:
    """One DLQ message in full: body, attributes, decoded keys and events."""
    selection = Selection(message_ids=(message_id,))

    async def work(opened: OpsClients) -> ReplayReport:
        return await Replayer(opened.aws.sqs, opened.queues.dlq_url, opened.queues.url,
                              selection=selection, dry_run=True, limit=1, concurrency=1,
                              visibility_timeout=visibility, wait_seconds=wait).run()

    report = _run(work)
    if not report.matching:
        raise PermanentError(f"no message {message_id} in {report.source}")
    emit(report.matching[0].to_export(now_ms()), json_output=json_output, render=_print_message)


def _print_message(document: dict[str, Any]) -> None:
    """One message as :meth:`DlqMessage.to_export` documents it: fields, attributes, body."""
    out = console()
    for name, value in document.items():
        if name not in ("body", "messageAttributes"):
            out.print(f"[bold]{name}[/bold]: {value}")
    out.print("[bold]messageAttributes[/bold]:")
    out.print_json(json.dumps(document["messageAttributes"]))
    out.print("[bold]body[/bold]:")
    try:
        out.print_json(document["body"])
    except Exception:  # not JSON: shown as it is
        out.print(document["body"], markup=False)


@app.command("replay")
def replay_command(
    key: KeyOption = None, event: EventOption = None, reason: ReasonOption = None,
    id_: IdOption = None, older_than: OlderOption = None, newer_than: NewerOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would move; change nothing.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Move at most this many.")] = None,
    rate: RateOption = None,
    concurrency: Annotated[int, typer.Option("--concurrency", envvar="S3CONVEX_REPLAY_CONCURRENCY",
                                             min=1, max=32, help="Parallel receive/send workers.")] = 4,
    operator: Annotated[str | None, typer.Option("--operator", envvar="S3CONVEX_OPERATOR",
                                                 help="Who runs this, for the audit row.")] = None,
    visibility: VisibilityOption = 60, wait: WaitOption = 1, json_output: JsonOption = False,
) -> None:
    """Move DLQ messages back to the source queue: sent first, deleted from the DLQ after."""
    selection = _selection(key, event, reason, id_, older_than, newer_than)
    per_second = parse_rate(rate) if rate else None

    async def work(opened: OpsClients) -> ReplayReport:
        with progress("dry run" if dry_run else "replaying") as bar:
            replayer = Replayer(
                opened.aws.sqs, opened.queues.dlq_url, opened.queues.url, selection=selection,
                dry_run=dry_run, limit=limit, rate=per_second, concurrency=concurrency,
                visibility_timeout=visibility, wait_seconds=wait,
                keep_matching=None if dry_run else 0,
                on_progress=lambda r: bar.update(r.examined, r.total_estimate,
                                                 f"selected {r.selected} moved {r.moved}"))
            if dry_run:
                return await replayer.run()
            await audited(ReplayAudit(opened.convex, operator=operator), replayer.report, replayer.run)
            return replayer.report

    report = _run(work, need_convex=not dry_run)
    emit(report.to_dict(), json_output=json_output, render=_print_replay)
    if report.send_failed:
        raise PermanentError(f"SQS refused {report.send_failed} of the messages sent to "
                             f"{report.target}; they are still in the DLQ")


def _print_replay(document: dict[str, Any]) -> None:
    """A run as :meth:`ReplayReport.to_dict` documents it."""
    out = console()
    dry = document["dryRun"]
    if dry:
        out.print(_messages_table(document["messages"],
                                  f"would move {document['selected']} → {document['target']}"))
    out.print(("would move" if dry else "moved")
              + f" {document['selected'] if dry else document['moved']} of {document['examined']} examined"
              + (f"; {document['sendFailed']} send(s) refused" if document["sendFailed"] else "")
              + (f"; {document['deleteFailed']} DLQ copies not deleted (may repeat)"
                 if document["deleteFailed"] else "")
              + (f"; {document['arrivedDuringRun']} arrived during the run (left)"
                 if document["arrivedDuringRun"] else "")
              + ("" if dry else f"; audit run {document['runId']}"))


@app.command("export")
def export_command(
    file: Annotated[Path, typer.Argument(help="JSONL file to write ('-' for stdout).")],
    key: KeyOption = None, event: EventOption = None, reason: ReasonOption = None,
    id_: IdOption = None, older_than: OlderOption = None, newer_than: NewerOption = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1)] = None,
    visibility: VisibilityOption = 60, wait: WaitOption = 1, json_output: JsonOption = False,
) -> None:
    """Write DLQ messages to JSONL (one per line) to read or edit; the DLQ keeps them.

    With FILE '-' the lines are stdout and the summary goes to stderr.
    """
    selection = _selection(key, event, reason, id_, older_than, newer_than)
    to_stdout = str(file) == "-"

    async def work(opened: OpsClients) -> ReplayReport:
        sqs, dlq_url = opened.aws.sqs, opened.queues.dlq_url
        if to_stdout:
            return await export_messages(sqs, dlq_url, sys.stdout, selection=selection, limit=limit,
                                         visibility_timeout=visibility, wait_seconds=wait)
        with file.open("w", encoding="utf-8") as out:
            return await export_messages(sqs, dlq_url, out, selection=selection, limit=limit,
                                         visibility_timeout=visibility, wait_seconds=wait)

    report = _run(work)
    document = {"file": str(file), "dlq": report.source, "exported": report.selected,
                "examined": report.examined, "arrivedDuringRun": report.newer}
    if to_stdout:  # stdout holds the lines themselves
        typer.echo(f"exported {report.selected} of {report.examined} messages to stdout", err=True)
    else:
        emit(document, json_output=json_output, render=lambda d: console().print(
            f"exported {d['exported']} of {d['examined']} messages to {d['file']}"))


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL from `export`.")],
    to: Annotated[str, typer.Option("--to", envvar="S3CONVEX_IMPORT_TO",
                                    help="'dlq' (then `replay`) or 'queue' (replay now).")] = "dlq",
    keep_originals: Annotated[bool, typer.Option(
        "--keep-originals", help="Do not delete the DLQ messages the lines came from.")] = False,
    rate: RateOption = None,
    operator: Annotated[str | None, typer.Option("--operator", envvar="S3CONVEX_OPERATOR")] = None,
    visibility: VisibilityOption = 60, wait: WaitOption = 1, json_output: JsonOption = False,
) -> None:
    """Send the lines of an export file (edited or not), replacing their DLQ originals."""
    if to not in ("dlq", "queue"):
        raise typer.BadParameter("--to must be 'dlq' or 'queue'")
    per_second = parse_rate(rate) if rate else None

    async def work(opened: OpsClients) -> ImportReport:
        queues = opened.queues
        target = queues.dlq_url if to == "dlq" else queues.url
        importer = Importer(opened.aws.sqs, queues.dlq_url, target, as_replay=to == "queue",
                            replace=not keep_originals, rate=per_second,
                            visibility_timeout=visibility, wait_seconds=wait)
        if to == "dlq":
            return await importer.run(file)
        replay = ReplayReport(run_id=new_run_id(), dry_run=False, source=str(file), target=target,
                              selection=Selection(), rate=per_second)
        result: list[ImportReport] = []

        async def run() -> None:
            result.append(await importer.run(file, replay))

        await audited(ReplayAudit(opened.convex, operator=operator), replay, run, kind="import",
                      extra_filters={"file": str(file)})
        return result[0]

    report = _run(work, need_convex=to == "queue")
    emit(report.to_dict(), json_output=json_output, render=_print_import)
    if report.send_failed:
        raise PermanentError(f"SQS refused {report.send_failed} of the {report.lines} lines "
                             f"sent to {report.target}")


def _print_import(document: dict[str, Any]) -> None:
    console().print(
        f"sent {document['sent']} of {document['lines']} lines to {document['target']}"
        + (f"; replaced {document['replaced']} DLQ originals" if document["replaced"] else "")
        + (f"; {document['originalsNotFound']} originals no longer in the DLQ"
           if document["originalsNotFound"] else "")
        + (f"; {document['sendFailed']} refused" if document["sendFailed"] else ""))


@app.command("runs")
def runs_command(
    limit: Annotated[int, typer.Option("--limit", envvar="S3CONVEX_REPLAY_RUNS_LIMIT",
                                       min=1, max=100)] = 20,
    json_output: JsonOption = False,
) -> None:
    """The latest replay runs recorded in Convex (the audit trail)."""
    from s3convex.settings import ConvexSettings, load

    convex_settings = load(ConvexSettings)

    async def fetch() -> list[dict[str, Any]]:
        async with clients(convex=convex_settings) as opened:
            return await opened.convex.query(LIST_RUNS, {"limit": limit})

    emit(asyncio.run(fetch()), json_output=json_output, render=_print_runs)


def _print_runs(runs: list[dict[str, Any]]) -> None:
    table = Table(show_header=True, header_style="bold")
    for column in ("Started", "Run", "Kind", "Status", "Operator", "Moved", "Selected", "Filters"):
        table.add_column(column, overflow="fold")
    for run in runs:
        table.add_row(iso_ms(run["startedAt"]), run["runId"], run["kind"], run["status"],
                      run["operator"], str(run["moved"]), str(run["selected"]),
                      json.dumps(run["filters"], ensure_ascii=False))
    console().print(table)


def register(root: typer.Typer) -> None:
    """Mount as ``s3convex replay`` (see ``s3convex.consumer.cli.COMMAND_MODULES``)."""
    root.add_typer(app, name="replay")
