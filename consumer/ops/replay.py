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
  default, replacing the originals they came from, or straight to the source queue.

The cores (:class:`Replayer`, :class:`Importer`, :func:`export_messages`) return plain reports;
the commands at the bottom only parse flags and print.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

import typer
from rich.table import Table

from consumer.convex_client import ConvexClient
from consumer.errors import PermanentError
from consumer.ops.dlq import (
    DlqMessage,
    DlqScanner,
    Outgoing,
    Selection,
    attributes_from_json,
    entry_bytes,
    queue_depth,
    send_batch,
    size_batches,
    with_replay_count,
)
from consumer.ops.output import (
    JsonOption,
    console,
    human_age,
    iso_ms,
    new_run_id,
    now_ms,
    parse_duration,
    parse_rate,
    print_json,
    progress,
    wants_json,
)

log = logging.getLogger(__name__)

RECORD_RUN = "operations:recordReplayRun"
LIST_RUNS = "operations:listReplayRuns"
MAX_AUDIT_IDS = 1000  # convex/operations.ts MAX_MOVED_IDS
MAX_MESSAGE_BYTES = 256 * 1024

Progress = Callable[["ReplayReport"], None]


# --- pacing --------------------------------------------------------------------------------------

def next_slot(next_free: float, now: float, count: int, interval: float) -> tuple[float, float]:
    """(seconds to wait, new next_free) for sending ``count`` messages at one per ``interval``.

    Pure: a send goes at ``max(now, next_free)`` and pushes the next one ``count × interval``
    later, so the average rate holds whatever the batch sizes and however many workers share it.
    """
    start = max(now, next_free)
    return start - now, start + count * interval


class RateLimiter:
    def __init__(self, per_second: float | None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._clock = clock
        self._sleep = sleep

    async def acquire(self, count: int) -> None:
        if not self._interval:
            return
        wait, self._next = next_slot(self._next, self._clock(), count, self._interval)
        if wait > 0:
            await self._sleep(wait)


# --- replay --------------------------------------------------------------------------------------

@dataclass
class ReplayReport:
    run_id: str
    dry_run: bool
    source: str
    target: str
    selection: Selection
    limit: int | None = None
    rate: float | None = None
    started_ms: int = field(default_factory=now_ms)
    finished_ms: int | None = None
    status: Literal["running", "completed", "interrupted", "failed"] = "running"
    error: str | None = None
    total_estimate: int | None = None  # DLQ depth at the start
    examined: int = 0
    selected: int = 0
    moved: int = 0
    send_failed: int = 0
    delete_failed: int = 0
    newer: int = 0  # arrived during the run: left for the next one
    truncated: bool = False
    matching: list[DlqMessage] = field(default_factory=list)  # dry run / list: what matched
    moved_ids: list[tuple[str, str]] = field(default_factory=list)  # (DLQ id, new id), capped

    def to_dict(self, *, now: int | None = None) -> dict[str, Any]:
        now = now or now_ms()
        return {
            "runId": self.run_id, "dryRun": self.dry_run, "status": self.status,
            "source": self.source, "target": self.target,
            "filters": self.selection.to_audit(), "limit": self.limit, "ratePerSecond": self.rate,
            "startedAt": iso_ms(self.started_ms), "finishedAt": iso_ms(self.finished_ms),
            "examined": self.examined, "selected": self.selected, "moved": self.moved,
            "sendFailed": self.send_failed, "deleteFailed": self.delete_failed,
            "arrivedDuringRun": self.newer, "truncated": self.truncated, "error": self.error,
            "messages": [m.summary(now) for m in self.matching],
            "movedIds": [{"from": a, "to": b} for a, b in self.moved_ids],
        }

    def to_audit(self, *, kind: str = "replay", extra_filters: dict[str, Any] | None = None,
                 operator: str | None = None, host: str | None = None) -> dict[str, Any]:
        filters = {**self.selection.to_audit(), **(extra_filters or {})}
        if self.limit is not None:
            filters["limit"] = self.limit
        if self.rate is not None:
            filters["ratePerSecond"] = self.rate
        row: dict[str, Any] = {
            "runId": self.run_id, "kind": kind, "status": self.status,
            "operator": operator or current_operator(), "host": host or socket.gethostname(),
            "source": self.source, "target": self.target, "filters": filters,
            "examined": self.examined, "selected": self.selected, "moved": self.moved,
            "sendFailed": self.send_failed, "deleteFailed": self.delete_failed,
            "movedIds": [{"from": a, "to": b} for a, b in self.moved_ids[:MAX_AUDIT_IDS]],
            "movedIdsTruncated": self.moved > MAX_AUDIT_IDS,
            "startedAt": self.started_ms,
        }
        if self.error:
            row["error"] = self.error[:2000]
        if self.status != "running":
            row["finishedAt"] = self.finished_ms or now_ms()
        return row


def current_operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


class Replayer:
    """Move selected DLQ messages to the source queue (or, dry, only say which).

    ``concurrency`` workers each receive → select → send → delete; they share the limit and
    the rate. Selected-but-not-moved and unselected messages stay held until the run ends, then
    become visible again at once.
    """

    def __init__(self, sqs: Any, dlq_url: str, queue_url: str, *, selection: Selection,
                 dry_run: bool = False, limit: int | None = None, rate: float | None = None,
                 concurrency: int = 4, visibility_timeout: int = 60, wait_seconds: int = 1,
                 keep_matching: int | None = None, on_progress: Progress | None = None) -> None:
        self._sqs = sqs
        self._dlq_url = dlq_url
        self._queue_url = queue_url
        self._selection = selection
        self._dry_run = dry_run
        self._limit = limit
        self._limiter = RateLimiter(rate)
        self._batch_size = min(10, max(1, int(rate))) if rate else 10
        self._concurrency = max(1, concurrency)
        self._visibility = visibility_timeout
        self._wait = wait_seconds
        self._keep_matching = limit if keep_matching is None else keep_matching
        self._on_progress = on_progress or (lambda _report: None)
        self._moved: set[str] = set()
        self._stop = asyncio.Event()
        self.report = ReplayReport(run_id=new_run_id(), dry_run=dry_run, source=dlq_url,
                                   target=queue_url, selection=selection, limit=limit, rate=rate)

    async def run(self) -> ReplayReport:
        report = self.report
        report.total_estimate = (await queue_depth(self._sqs, self._dlq_url))["visible"]
        try:
            async with DlqScanner(self._sqs, self._dlq_url, visibility_timeout=self._visibility,
                                  wait_seconds=self._wait) as scan:
                workers = [asyncio.create_task(self._work(scan), name=f"replay-{i}")
                           for i in range(self._concurrency)]
                try:
                    await asyncio.gather(*workers)
                finally:
                    for worker in workers:
                        worker.cancel()
                    await asyncio.gather(*workers, return_exceptions=True)
                    report.newer, report.truncated = scan.newer, scan.truncated
        except asyncio.CancelledError:
            report.status = "interrupted"
            raise
        except Exception as exc:
            report.status, report.error = "failed", str(exc)
            raise
        else:
            report.status = "completed"
        finally:
            report.finished_ms = now_ms()
            report.matching.sort(key=lambda m: (m.sent_at_ms or 0, m.message_id))
        return report

    def _reserve(self, wanted: int) -> int:
        """How many of ``wanted`` selected messages this worker may take under ``--limit``."""
        if self._limit is None:
            granted = wanted
        else:
            granted = max(0, min(wanted, self._limit - self.report.selected))
        self.report.selected += granted
        if self._limit is not None and self.report.selected >= self._limit:
            self._stop.set()
        return granted

    async def _work(self, scan: DlqScanner) -> None:
        report = self.report
        while not self._stop.is_set():
            batch = await scan.receive()
            if batch is None:
                return
            now = now_ms()
            report.examined = scan.seen
            chosen = [m for m in batch if self._selection.matches(m, now)]
            again = [m for m in chosen if m.message_id in self._moved]
            if again:  # already sent; only its delete failed before
                await scan.delete(again)
            chosen = [m for m in chosen if m.message_id not in self._moved]
            chosen = chosen[:self._reserve(len(chosen))]
            if self._keep_matching is None or len(report.matching) < self._keep_matching:
                room = None if self._keep_matching is None else self._keep_matching - len(report.matching)
                report.matching.extend(chosen[:room])
            if chosen and not self._dry_run:
                await self._move(scan, chosen)
            self._on_progress(report)

    async def _move(self, scan: DlqScanner, messages: list[DlqMessage]) -> None:
        report = self.report
        outgoing = [Outgoing(m, m.body, with_replay_count(m.message_attributes)) for m in messages]
        for group in size_batches(outgoing, lambda o: entry_bytes(o.body, o.attributes),
                                  max_count=self._batch_size):
            await self._limiter.acquire(len(group))
            new_ids = await send_batch(self._sqs, self._queue_url, group)
            sent = [(o.ref, new_id) for o, new_id in zip(group, new_ids, strict=True) if new_id]
            report.send_failed += len(group) - len(sent)
            # Only now, with the copy safely on the source queue, may the DLQ copy go.
            for message, new_id in sent:
                self._moved.add(message.message_id)
                if len(report.moved_ids) < MAX_AUDIT_IDS:
                    report.moved_ids.append((message.message_id, new_id))
            report.moved += len(sent)
            deleted = await scan.delete([m for m, _ in sent])
            report.delete_failed += deleted.count(False)


class ReplayAudit:
    """Writes the ``replayRuns`` row for a run: before it moves anything, and with its outcome."""

    def __init__(self, convex: ConvexClient, *, operator: str | None = None) -> None:
        self._convex = convex
        self._operator = operator or current_operator()
        self._host = socket.gethostname()

    async def record(self, report: ReplayReport, **kwargs: Any) -> None:
        row = report.to_audit(operator=self._operator, host=self._host, **kwargs)
        await self._convex.mutation(RECORD_RUN, row)


async def audited(audit: ReplayAudit, report: ReplayReport, work: Callable[[], Awaitable[Any]],
                  **audit_kwargs: Any) -> None:
    """Run ``work()`` between the "running" and the outcome audit writes. The first write must
    succeed (no unaudited moves); the outcome is written whatever happened to the work."""
    await audit.record(report, **audit_kwargs)
    try:
        await work()
    except BaseException as exc:
        if report.status == "running":
            interrupted = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
            report.status = "interrupted" if interrupted else "failed"
            report.error = report.error or str(exc) or type(exc).__name__
        raise
    finally:
        if report.status == "running":
            report.status = "completed"
        report.finished_ms = report.finished_ms or now_ms()
        await asyncio.shield(audit.record(report, **audit_kwargs))


# --- export / import -----------------------------------------------------------------------------

async def export_messages(sqs: Any, dlq_url: str, out: TextIO, *, selection: Selection,
                          limit: int | None = None, visibility_timeout: int = 60,
                          wait_seconds: int = 1) -> ReplayReport:
    """Write each selected message as one JSON line (see :meth:`DlqMessage.to_export`),
    streaming, and put every message back: export removes nothing."""
    exported = 0
    report = ReplayReport(run_id=new_run_id(), dry_run=True, source=dlq_url, target="export",
                          selection=selection, limit=limit)
    async with DlqScanner(sqs, dlq_url, visibility_timeout=visibility_timeout,
                          wait_seconds=wait_seconds) as scan:
        while limit is None or exported < limit:
            batch = await scan.receive()
            if batch is None:
                break
            now = now_ms()
            for message in batch:
                if selection.matches(message, now) and (limit is None or exported < limit):
                    out.write(json.dumps(message.to_export(now), ensure_ascii=False) + "\n")
                    exported += 1
            report.examined = scan.seen
        report.newer = scan.newer
    report.selected = exported
    report.status, report.finished_ms = "completed", now_ms()
    return report


@dataclass(frozen=True, slots=True)
class ImportLine:
    line_no: int
    original_id: str | None
    body: str
    attributes: dict[str, Any]


def read_import_file(path: Path) -> Iterator[ImportLine]:
    """Parse and check an export file line by line (streaming); a bad line names its number."""
    with path.open(encoding="utf-8") as lines:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                yield _parse_line(number, text)
            except (ValueError, TypeError) as exc:
                raise PermanentError(f"{path}: line {number}: {exc}") from None


def _parse_line(number: int, text: str) -> ImportLine:
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    body = document.get("body")
    if isinstance(body, dict | list):  # an edited body may be written as JSON itself
        body = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    if not isinstance(body, str) or not body:
        raise ValueError("needs a non-empty 'body' (a string, or a JSON object)")
    attributes = attributes_from_json(document.get("messageAttributes") or {})
    if len(attributes) > 10:
        raise ValueError("SQS allows at most 10 message attributes")
    if entry_bytes(body, attributes) > MAX_MESSAGE_BYTES:
        raise ValueError("message is larger than SQS's 256 KiB")
    original = document.get("messageId")
    return ImportLine(number, original if isinstance(original, str) and original else None,
                      body, attributes)


@dataclass
class ImportReport:
    file: str
    target: str
    lines: int = 0
    sent: int = 0
    send_failed: int = 0
    replaced: int = 0
    originals_not_found: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "target": self.target, "lines": self.lines, "sent": self.sent,
                "sendFailed": self.send_failed, "replaced": self.replaced,
                "originalsNotFound": self.originals_not_found}


class Importer:
    """Send the lines of an export file to ``target_url``; then, with ``replace``, delete from
    the DLQ each original whose line was sent (send first, delete after: never a loss).

    The whole file is checked before anything is sent. ``as_replay`` adds the replay count
    (sending straight to the source queue is a replay).
    """

    def __init__(self, sqs: Any, dlq_url: str, target_url: str, *, as_replay: bool,
                 replace: bool = True, rate: float | None = None, visibility_timeout: int = 60,
                 wait_seconds: int = 1) -> None:
        self._sqs = sqs
        self._dlq_url = dlq_url
        self._target = target_url
        self._as_replay = as_replay
        self._replace = replace
        self._limiter = RateLimiter(rate)
        self._visibility = visibility_timeout
        self._wait = wait_seconds

    async def run(self, path: Path, replay: ReplayReport | None = None) -> ImportReport:
        report = ImportReport(file=str(path), target=self._target)
        report.lines = sum(1 for _ in read_import_file(path))  # check all before sending any
        sent_originals: set[str] = set()
        pending: list[ImportLine] = []
        for line in read_import_file(path):
            pending.append(line)
            if len(pending) == 10:
                await self._send(pending, report, sent_originals, replay)
                pending = []
        if pending:
            await self._send(pending, report, sent_originals, replay)
        if self._replace and sent_originals:
            await self._delete_originals(sent_originals, report)
        return report

    async def _send(self, lines: list[ImportLine], report: ImportReport, sent_originals: set[str],
                    replay: ReplayReport | None) -> None:
        outgoing = [Outgoing(line, line.body,
                             with_replay_count(line.attributes) if self._as_replay else line.attributes)
                    for line in lines]
        for group in size_batches(outgoing, lambda o: entry_bytes(o.body, o.attributes)):
            await self._limiter.acquire(len(group))
            new_ids = await send_batch(self._sqs, self._target, group)
            for item, new_id in zip(group, new_ids, strict=True):
                if new_id is None:
                    report.send_failed += 1
                    continue
                report.sent += 1
                if item.ref.original_id:
                    sent_originals.add(item.ref.original_id)
                if replay is not None:
                    replay.moved += 1
                    if len(replay.moved_ids) < MAX_AUDIT_IDS:
                        replay.moved_ids.append((item.ref.original_id or f"line:{item.ref.line_no}", new_id))
        if replay is not None:
            replay.examined = replay.selected = report.lines
            replay.send_failed = report.send_failed

    async def _delete_originals(self, originals: set[str], report: ImportReport) -> None:
        async with DlqScanner(self._sqs, self._dlq_url, visibility_timeout=self._visibility,
                              wait_seconds=self._wait) as scan:
            remaining = set(originals)
            while remaining:
                batch = await scan.receive()
                if batch is None:
                    break
                found = [m for m in batch if m.message_id in remaining]
                if found:
                    deleted = await scan.delete(found)
                    report.replaced += deleted.count(True)
                    remaining -= {m.message_id for m in found}
            report.originals_not_found = len(remaining)


# --- the commands ----------------------------------------------------------------------------------

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


async def _with_queues(work: Callable[[Any, str, str, Any], Awaitable[Any]], *,
                       need_convex: bool = False) -> Any:
    """Open AWS (and Convex) clients from the settings and hand ``work`` the queue URLs."""
    from consumer.aws import open_clients
    from consumer.config import load_settings
    from consumer.daemon import resolve_queues
    from infra.desired import load_infra_settings

    settings = load_settings() if need_convex else load_infra_settings()
    async with open_clients(settings, max_pool_connections=32) as aws:
        queue_url, dlq_url, _ = await resolve_queues(aws, settings)
        if not need_convex:
            return await work(aws.sqs, queue_url, dlq_url, None)
        async with ConvexClient(settings.convex_base_url, settings.convex_deploy_key,
                                timeout=settings.convex_timeout) as convex:
            return await work(aws.sqs, queue_url, dlq_url, convex)


def _messages_table(messages: list[DlqMessage], title: str) -> Table:
    now = now_ms()
    table = Table(title=title, show_header=True, header_style="bold")
    for column in ("Age", "Recv", "Bucket/key", "Event", "Reason", "Message id"):
        table.add_column(column, overflow="fold")
    for m in messages:
        keys = m.keys[0] if m.keys else "-"
        if len(m.keys) > 1:
            keys += f" (+{len(m.keys) - 1})"
        where = f"{m.buckets[0]}/{keys}" if m.buckets else keys
        reason = m.reason or ("(moved by SQS redrive)" if m.source_arn else "-")
        table.add_row(human_age(m.age_seconds(now)), str(m.failed_receive_count or m.dlq_receive_count),
                      where, ", ".join(m.events) or "-", reason, m.message_id)
    return table


@app.command("list")
def list_command(
    key: KeyOption = None, event: EventOption = None, reason: ReasonOption = None,
    id_: IdOption = None, older_than: OlderOption = None, newer_than: NewerOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many.")] = 200,
    visibility: VisibilityOption = 60, wait: WaitOption = 1, json_output: JsonOption = False,
) -> None:
    """DLQ messages: age, receive count, bucket/key, event, failure reason, message id."""
    selection = _selection(key, event, reason, id_, older_than, newer_than)

    async def work(sqs: Any, queue_url: str, dlq_url: str, _: Any) -> ReplayReport:
        replayer = Replayer(sqs, dlq_url, queue_url, selection=selection, dry_run=True,
                            concurrency=1, visibility_timeout=visibility, wait_seconds=wait,
                            keep_matching=limit)
        return await replayer.run()

    report = asyncio.run(_with_queues(work))
    if wants_json(json_output):
        data = report.to_dict()
        print_json({"dlq": report.source, "examined": report.examined, "matching": report.selected,
                    "shown": len(report.matching), "messages": data["messages"]})
        return
    console().print(_messages_table(report.matching, f"{report.source}"))
    console().print(f"{report.selected} of {report.examined} messages match"
                    + (f"; showing {len(report.matching)}" if len(report.matching) < report.selected else ""))


@app.command("show")
def show_command(
    message_id: Annotated[str, typer.Argument(help="DLQ message id or original message id.")],
    visibility: VisibilityOption = 60, wait: WaitOption = 1, json_output: JsonOption = False,
) -> None:
    """One DLQ message in full: body, attributes, decoded keys and events."""
    selection = Selection(message_ids=(message_id,))

    async def work(sqs: Any, queue_url: str, dlq_url: str, _: Any) -> ReplayReport:
        return await Replayer(sqs, dlq_url, queue_url, selection=selection, dry_run=True, limit=1,
                              concurrency=1, visibility_timeout=visibility, wait_seconds=wait).run()

    report = asyncio.run(_with_queues(work))
    if not report.matching:
        typer.echo(f"no message {message_id} in {report.source}", err=True)
        raise typer.Exit(1)
    message = report.matching[0]
    data = message.to_export(now_ms())
    if wants_json(json_output):
        print_json(data)
        return
    out = console()
    for name, value in data.items():
        if name not in ("body", "messageAttributes"):
            out.print(f"[bold]{name}[/bold]: {value}")
    out.print("[bold]messageAttributes[/bold]:")
    out.print_json(json.dumps(data["messageAttributes"]))
    out.print("[bold]body[/bold]:")
    try:
        out.print_json(message.body)
    except Exception:
        out.print(message.body, markup=False)


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

    async def work(sqs: Any, queue_url: str, dlq_url: str, convex: Any) -> ReplayReport:
        with progress("dry run" if dry_run else "replaying") as bar:
            replayer = Replayer(
                sqs, dlq_url, queue_url, selection=selection, dry_run=dry_run, limit=limit,
                rate=per_second, concurrency=concurrency, visibility_timeout=visibility,
                wait_seconds=wait, keep_matching=None if dry_run else 0,
                on_progress=lambda r: bar.update(r.examined, r.total_estimate,
                                                 f"selected {r.selected} moved {r.moved}"))
            if dry_run:
                return await replayer.run()
            await audited(ReplayAudit(convex, operator=operator), replayer.report, replayer.run)
            return replayer.report

    report = asyncio.run(_with_queues(work, need_convex=not dry_run))
    if wants_json(json_output):
        print_json(report.to_dict())
    else:
        out = console()
        if dry_run:
            out.print(_messages_table(report.matching, f"would move {report.selected} → {report.target}"))
        verb = "would move" if dry_run else "moved"
        moved = report.selected if dry_run else report.moved
        out.print(f"{verb} {moved} of {report.examined} examined"
                  + (f"; {report.send_failed} send(s) refused" if report.send_failed else "")
                  + (f"; {report.delete_failed} DLQ copies not deleted (may repeat)" if report.delete_failed else "")
                  + (f"; {report.newer} arrived during the run (left)" if report.newer else "")
                  + ("" if dry_run else f"; audit run {report.run_id}"))
    if report.send_failed:
        raise typer.Exit(1)


@app.command("export")
def export_command(
    file: Annotated[Path, typer.Argument(help="JSONL file to write ('-' for stdout).")],
    key: KeyOption = None, event: EventOption = None, reason: ReasonOption = None,
    id_: IdOption = None, older_than: OlderOption = None, newer_than: NewerOption = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1)] = None,
    visibility: VisibilityOption = 60, wait: WaitOption = 1,
) -> None:
    """Write DLQ messages to JSONL (one per line) to read or edit; the DLQ keeps them."""
    selection = _selection(key, event, reason, id_, older_than, newer_than)

    async def work(sqs: Any, _queue_url: str, dlq_url: str, _: Any) -> ReplayReport:
        if str(file) == "-":
            import sys

            return await export_messages(sqs, dlq_url, sys.stdout, selection=selection, limit=limit,
                                         visibility_timeout=visibility, wait_seconds=wait)
        with file.open("w", encoding="utf-8") as out:
            return await export_messages(sqs, dlq_url, out, selection=selection, limit=limit,
                                         visibility_timeout=visibility, wait_seconds=wait)

    report = asyncio.run(_with_queues(work))
    typer.echo(f"exported {report.selected} of {report.examined} messages to {file}", err=True)


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL from `export`.")],
    to: Annotated[str, typer.Option("--to", help="'dlq' (then `replay`) or 'queue' (replay now).")] = "dlq",
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

    async def work(sqs: Any, queue_url: str, dlq_url: str, convex: Any) -> ImportReport:
        target = dlq_url if to == "dlq" else queue_url
        importer = Importer(sqs, dlq_url, target, as_replay=to == "queue", replace=not keep_originals,
                            rate=per_second, visibility_timeout=visibility, wait_seconds=wait)
        if to == "dlq":
            return await importer.run(file)
        replay = ReplayReport(run_id=new_run_id(), dry_run=False, source=str(file), target=target,
                              selection=Selection(), rate=per_second)
        result: list[ImportReport] = []

        async def run() -> None:
            result.append(await importer.run(file, replay))

        await audited(ReplayAudit(convex, operator=operator), replay, run, kind="import",
                      extra_filters={"file": str(file)})
        return result[0]

    report = asyncio.run(_with_queues(work, need_convex=to == "queue"))
    if wants_json(json_output):
        print_json(report.to_dict())
    else:
        console().print(
            f"sent {report.sent} of {report.lines} lines to {report.target}"
            + (f"; replaced {report.replaced} DLQ originals" if report.replaced else "")
            + (f"; {report.originals_not_found} originals no longer in the DLQ"
               if report.originals_not_found else "")
            + (f"; {report.send_failed} refused" if report.send_failed else ""))
    if report.send_failed:
        raise typer.Exit(1)


@app.command("runs")
def runs_command(
    limit: Annotated[int, typer.Option("--limit", min=1, max=100)] = 20,
    json_output: JsonOption = False,
) -> None:
    """The latest replay runs recorded in Convex (the audit trail)."""
    from consumer.config import load_settings

    settings = load_settings()

    async def fetch() -> list[dict[str, Any]]:
        async with ConvexClient(settings.convex_base_url, settings.convex_deploy_key,
                                timeout=settings.convex_timeout) as convex:
            return await convex.query(LIST_RUNS, {"limit": limit})

    runs = asyncio.run(fetch())
    if wants_json(json_output):
        print_json(runs)
        return
    table = Table(show_header=True, header_style="bold")
    for column in ("Started", "Run", "Kind", "Status", "Operator", "Moved", "Selected", "Filters"):
        table.add_column(column, overflow="fold")
    for run in runs:
        table.add_row(iso_ms(run["startedAt"]), run["runId"], run["kind"], run["status"],
                      run["operator"], str(run["moved"]), str(run["selected"]),
                      json.dumps(run["filters"], ensure_ascii=False))
    console().print(table)


def register(root: typer.Typer) -> None:
    """Mount as ``s3convex replay`` (see ``consumer.cli.COMMAND_MODULES``)."""
    root.add_typer(app, name="replay")
