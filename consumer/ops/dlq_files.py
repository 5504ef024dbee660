"""DLQ messages to and from JSONL files: ``s3convex replay export`` and ``import``.

:func:`export_messages` streams the selected DLQ messages to a file, one JSON line each, and
puts every message back (export removes nothing). :class:`Importer` checks a whole (possibly
edited) file first, then sends its lines — to the DLQ, or straight to the source queue as a
replay with the replay count — and deletes the DLQ originals the sent lines came from: sent
first, deleted after, never a loss.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from s3convex.adapters.sqs_batch import Outgoing, entry_bytes, send_batch, size_batches
from s3convex.consumer.ops.dlq import Selection
from s3convex.consumer.ops.dlq_attributes import attributes_from_json, with_replay_count
from s3convex.consumer.ops.dlq_scanner import DlqScanner
from s3convex.consumer.ops.output import new_run_id, now_ms
from s3convex.consumer.ops.pacing import RateLimiter
from s3convex.consumer.ops.replayer import MAX_AUDIT_IDS, ReplayReport
from s3convex.core.errors import PermanentError

MAX_MESSAGE_BYTES = 256 * 1024


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
