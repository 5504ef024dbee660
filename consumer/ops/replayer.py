"""The mover: select DLQ messages and move them back to the source queue, without losing one.

:class:`Replayer` scans the DLQ with :class:`~s3convex.consumer.ops.dlq_scanner.DlqScanner` (whatever it
looks at but does not move becomes visible again at once when the run ends), keeps the messages
its :class:`~s3convex.consumer.ops.dlq.Selection` matches, and — unless it is a dry run — *sends* each to
the source queue with its body and attributes unchanged plus ``s3convex.replay-count``, and
deletes the DLQ copy only once the send succeeded: a crash in between leaves a duplicate
(applying is idempotent), never a loss. Its :class:`ReplayReport` is plain data: what the
commands print and what :mod:`s3convex.consumer.ops.replay_audit` writes to Convex.
"""

from __future__ import annotations

import asyncio
import getpass
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from s3convex.adapters.sqs_batch import Outgoing, entry_bytes, queue_depth, send_batch, size_batches
from s3convex.consumer.ops.dlq import DlqMessage, Selection
from s3convex.consumer.ops.dlq_attributes import with_replay_count
from s3convex.consumer.ops.dlq_scanner import DlqScanner
from s3convex.consumer.ops.output import iso_ms, new_run_id, now_ms
from s3convex.consumer.ops.pacing import RateLimiter

MAX_AUDIT_IDS = 1000  # convex/operations.ts MAX_MOVED_IDS

Progress = Callable[["ReplayReport"], None]


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
