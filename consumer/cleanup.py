"""The cleanup worker (R4.2, R4.4): removes from S3 what Convex marked ``cleanup_pending``.

A deleted session's assets and obsolete scene versions are marked in Convex first
(``sessions:delete``, ``retention:mark``); once the grace has passed they are *due*.
One pass (:meth:`CleanupWorker.run_once`):

1. ``lifecycle:due`` pages the due records (≤ 1,000, the longest due first);
2. each key is checked here too: the record's bucket is ours and the key lies inside its own
   session's prefix by the configured layout (``ASSET_KEY_LAYOUT``) — anything else is refused
   and recorded as a failure (``outside_prefix``), never deleted;
3. ``DeleteObjects`` (≤ 1,000 keys, verbose: a result per key). A key S3 reports removed, or
   already gone (``NoSuchKey``, ``NoSuchVersion``), is *deleted*; a per-key error keeps the
   record pending with the error and a jittered exponential backoff (``lifecycle:recordFailures``);
   a whole call that fails (503 after botocore's retries, AccessDenied) does so for every key;
4. ``lifecycle:markDeleted`` tombstones the deleted ones. Convex re-checks the same guards, and
   a record that is no longer pending (restored, re-uploaded) is left alone.

S3 is always asked before Convex is told: a worker killed between the two leaves records
pending, the next pass deletes them again (S3 answers "deleted" for a key already gone) and
tombstones them once — history never holds two removals of one object.

Versioned buckets: the record knows the version S3 reported last (``versionId``); that version
is deleted for good. Older versions the record never knew stay as noncurrent versions until
the ``NoncurrentVersionExpiration`` rule ``infra up`` sets (infra/lifecycle.py) removes them; a
record without a version id gets a plain delete, i.e. a delete marker, with the same end.

Every pass writes one audit row (``cleanupRuns``: who, how many, failures), updated as batches
finish — at most every :data:`AUDIT_EVERY_S` (each update is a Convex mutation on the pass's hot
path; the local server runs one at a time) — so a killed pass still shows what it did, up to
that much behind. Metrics: objects and bytes deleted, failures by S3 code,
the pending backlog and its age (OpenTelemetry, on the global meter provider).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics

from s3convex.adapters.convex import ConvexClient
from s3convex.core.errors import RetryableError, SyncError
from s3convex.core.layout import KeyLayout
from s3convex.settings import CleanupSettings

log = logging.getLogger(__name__)

# S3's answers that mean "nothing left to delete".
GONE_CODES = frozenset({"NoSuchKey", "NoSuchVersion"})
MAX_AUDIT_ERRORS = 20
AUDIT_EVERY_S = 2.0  # the audit row's progress updates during a pass, at most this often

_meter = metrics.get_meter("s3convex.cleanup")
objects_deleted = _meter.create_counter(
    "s3convex.cleanup.objects_deleted", unit="{object}",
    description="Objects the cleanup worker removed from S3 (tombstoned in Convex)")
bytes_deleted = _meter.create_counter(
    "s3convex.cleanup.bytes_deleted", unit="By",
    description="Bytes of the objects the cleanup worker removed")
cleanup_failures = _meter.create_counter(
    "s3convex.cleanup.failures", unit="{object}",
    description="Keys whose removal failed (error.type: S3's code), retried with backoff")


@dataclass
class _Backlog:
    pending: int = 0
    failed: int = 0
    oldest_due_at_ms: float | None = None


_backlog = _Backlog()


def _observe_backlog(_options: Any) -> list[metrics.Observation]:
    return [metrics.Observation(_backlog.pending, {"state": "pending"}),
            metrics.Observation(_backlog.failed, {"state": "failed"})]


def _observe_age(_options: Any) -> list[metrics.Observation]:
    due = _backlog.oldest_due_at_ms
    return [metrics.Observation(max(0.0, time.time() - due / 1000) if due else 0.0)]


_meter.create_observable_gauge(
    "s3convex.cleanup.backlog", callbacks=[_observe_backlog], unit="{object}",
    description="Records waiting for removal (pending) or given up on (failed); counts stop at 1,000")
_meter.create_observable_gauge(
    "s3convex.cleanup.backlog_age", callbacks=[_observe_age], unit="s",
    description="How long the longest-due pending removal has been due")


@dataclass
class CleanupReport:
    """What one pass did; ``to_dict`` is what ``s3convex cleanup`` prints."""

    run_id: str
    dry_run: bool
    session: str | None = None
    examined: int = 0
    deleted: int = 0
    bytes_deleted: int = 0
    failed: int = 0
    gave_up: int = 0
    skipped: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    would_delete: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "runId": self.run_id, "dryRun": self.dry_run, "session": self.session,
            "examined": self.examined, "deleted": self.deleted, "bytesDeleted": self.bytes_deleted,
            "failed": self.failed, "gaveUp": self.gave_up, "skipped": self.skipped,
            "errors": self.errors}
        if self.dry_run:
            document["wouldDelete"] = self.would_delete
        return document


@dataclass(frozen=True, slots=True)
class _Failure:
    asset_id: str
    key: str
    code: str
    message: str = ""


def in_session_prefix(key: str, session_id: str | None, layout: KeyLayout) -> bool:
    """The worker's own guard: the layout places ``key`` in ``session_id``, as a whole segment."""
    if not session_id:
        return False
    return (layout.classify(key).session_id == session_id
            and session_id in key.split("/")[:-1])


class CleanupWorker:
    """Removes due records' objects from one bucket; see the module docstring."""

    def __init__(self, convex: ConvexClient, s3: Any, *, bucket: str, layout: KeyLayout,
                 settings: CleanupSettings, operator: str = "daemon",
                 new_run_id: Callable[[], str] = lambda: f"cleanup-{uuid.uuid4().hex[:12]}") -> None:
        self._convex = convex
        self._s3 = s3
        self._bucket = bucket
        self._layout = layout
        self._settings = settings
        self._operator = operator
        self._new_run_id = new_run_id
        self._audited_at = 0.0  # time.monotonic() of the audit row's last update

    async def run_once(self, *, dry_run: bool = False, session: str | None = None,
                       limit: int | None = None) -> CleanupReport:
        """One pass over what is due now (at most ``limit`` records); audited in Convex."""
        report = CleanupReport(run_id=self._new_run_id(), dry_run=dry_run, session=session)
        await self._record(report, "running")
        try:
            if dry_run:
                await self._dry_run(report, session, limit)
            else:
                await self._delete_due(report, session, limit)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._record(report, "failed", error=str(exc)))
            raise
        await self._record(report, "completed")
        await self.refresh_backlog()
        return report

    async def _dry_run(self, report: CleanupReport, session: str | None, limit: int | None) -> None:
        cursor, as_of = None, None
        while limit is None or report.examined < limit:
            size = self._settings.batch if limit is None else min(self._settings.batch,
                                                                 limit - report.examined)
            page = await self._due(size, session, cursor, as_of)
            cursor, as_of = page["continueCursor"], page["asOf"]
            for row in page["page"]:
                report.examined += 1
                if self._refusal(row) is not None:
                    report.skipped += 1
                    continue
                report.would_delete.append({"key": row["key"], "size": int(row.get("size") or 0),
                                            "cause": row["cause"], "attempts": int(row["attempts"])})
            if page["isDone"]:
                break

    async def _delete_due(self, report: CleanupReport, session: str | None,
                          limit: int | None) -> None:
        """Pages through what is due with one cursor (so a page in flight is never read twice),
        deleting up to CLEANUP_CONCURRENCY batches at once: S3 works on one batch while Convex
        records the last and reads the next.

        The next page is asked for as soon as a page arrives, before its batch starts: the
        batch's synchronous work (the guards, botocore building a 1,000-key request) would
        otherwise run first and leave the local server idle. At most one page waits unclaimed.
        """
        slots = asyncio.Semaphore(self._settings.concurrency)
        in_flight: set[asyncio.Task[None]] = set()
        errors: list[BaseException] = []

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            slots.release()
            if not task.cancelled() and task.exception() is not None:
                errors.append(task.exception())  # type: ignore[arg-type]

        def page_size(taken: int) -> int:
            return self._settings.batch if limit is None else min(self._settings.batch, limit - taken)

        taken = 0
        next_page: asyncio.Task[dict[str, Any]] | None = asyncio.create_task(
            self._due(page_size(0), session, None, None), name="cleanup-due")
        try:
            while next_page is not None:
                page = await next_page
                next_page = None
                rows = page["page"]
                taken += len(rows)
                if not page["isDone"] and (limit is None or taken < limit):
                    next_page = asyncio.create_task(
                        self._due(page_size(taken), session, page["continueCursor"], page["asOf"]),
                        name="cleanup-due")
                if rows:
                    await slots.acquire()
                    if errors:
                        slots.release()
                        break
                    task = asyncio.create_task(self._batch(report, rows), name="cleanup-batch")
                    in_flight.add(task)
                    task.add_done_callback(finished)
        finally:
            if next_page is not None:
                next_page.cancel()
            await asyncio.gather(*in_flight, *([next_page] if next_page else []),
                                 return_exceptions=True)
        if errors:
            raise errors[0]

    async def _batch(self, report: CleanupReport, rows: Sequence[dict[str, Any]]) -> None:
        report.examined += len(rows)
        failures: list[_Failure] = []
        sendable = []
        for row in rows:
            refused = self._refusal(row)
            if refused is None:
                sendable.append(row)
            elif refused == "other_bucket":  # another daemon's: not ours to fail either
                report.skipped += 1
            else:
                log.error("cleanup refused a key", extra={"key": row["key"], "reason": refused})
                report.skipped += 1
                failures.append(_Failure(row["assetId"], row["key"], refused))
        deleted, s3_failures = await self._delete_objects(sendable)
        failures.extend(s3_failures)
        if deleted:
            results = await self._convex.mutation("lifecycle:markDeleted", {
                "runId": report.run_id,
                "assets": [{"assetId": row["assetId"], "key": row["key"]} for row in deleted]})
            outcomes = {result["assetId"]: result["outcome"] for result in results}
            for row in deleted:
                outcome = outcomes.get(row["assetId"], "no_record")
                if outcome == "deleted":
                    size = int(row.get("size") or 0)
                    report.deleted += 1
                    report.bytes_deleted += size
                    objects_deleted.add(1, {"cause": row["cause"]})
                    bytes_deleted.add(size, {"cause": row["cause"]})
                elif outcome not in ("already_deleted", "not_pending", "no_record"):
                    # Convex's own guard refused (outside_prefix, key_mismatch, not_due): the
                    # record backs off like a failure instead of coming back every pass.
                    log.error("Convex refused a removal", extra={"key": row["key"],
                                                                 "reason": outcome})
                    failures.append(_Failure(row["assetId"], row["key"], outcome))
        if failures:
            await self._record_failures(report, failures)
        if time.monotonic() - self._audited_at >= AUDIT_EVERY_S:
            await self._record(report, "running")

    async def _delete_objects(self, rows: Sequence[dict[str, Any]]
                              ) -> tuple[list[dict[str, Any]], list[_Failure]]:
        if not rows:
            return [], []
        objects = [{"Key": row["key"], **({"VersionId": row["versionId"]} if row.get("versionId") else {})}
                   for row in rows]
        by_key = {row["key"]: row for row in rows}
        try:
            answer = await self._s3.delete_objects(
                Bucket=self._bucket, Delete={"Objects": objects, "Quiet": False})
        except SyncError as exc:
            # The whole call failed (botocore already retried a 503): every key waits.
            code = exc.code or type(exc).__name__
            log.warning("DeleteObjects failed", extra={"keys": len(rows), "code": code,
                                                       "error": str(exc)})
            return [], [_Failure(row["assetId"], row["key"], code, str(exc)[:300]) for row in rows]
        deleted = [by_key[item["Key"]] for item in answer.get("Deleted", []) if item.get("Key") in by_key]
        failures = []
        for item in answer.get("Errors", []):
            row = by_key.get(item.get("Key", ""))
            if row is None:
                continue
            code = item.get("Code") or "Unknown"
            if code in GONE_CODES:
                deleted.append(row)
                continue
            log.warning("S3 refused to delete a key", extra={"key": row["key"], "code": code,
                                                              "error": item.get("Message")})
            failures.append(_Failure(row["assetId"], row["key"], code, item.get("Message") or ""))
        return deleted, failures

    async def _record_failures(self, report: CleanupReport, failures: Sequence[_Failure]) -> None:
        results = await self._convex.mutation("lifecycle:recordFailures", {
            "runId": report.run_id,
            "failures": [{"assetId": f.asset_id, "key": f.key, "code": f.code,
                          **({"message": f.message} if f.message else {})} for f in failures],
            "maxAttempts": self._settings.max_attempts,
            "baseDelayMs": int(self._settings.backoff_base * 1000),
            "maxDelayMs": int(self._settings.backoff_max * 1000)})
        for failure, result in zip(failures, results, strict=True):
            cleanup_failures.add(1, {"error.type": failure.code})
            report.failed += 1
            if result["outcome"] == "cleanup_failed":
                report.gave_up += 1
                log.error("cleanup gave up on a key", extra={"key": failure.key, "code": failure.code,
                                                            "attempts": result.get("attempts")})
            if len(report.errors) < MAX_AUDIT_ERRORS:
                report.errors.append({"key": failure.key, "code": failure.code})

    def _refusal(self, row: dict[str, Any]) -> str | None:
        if row["bucket"] != self._bucket:
            return "other_bucket"
        if not in_session_prefix(row["key"], row.get("sessionId"), self._layout):
            return "outside_prefix"
        return None

    async def _due(self, limit: int, session: str | None, cursor: str | None,
                   as_of: float | None) -> dict[str, Any]:
        args: dict[str, Any] = {"bucket": self._bucket, "limit": limit, "cursor": cursor}
        if session is not None:
            args["sessionId"] = session
        if as_of is not None:
            args["asOf"] = as_of
        return dict(await self._convex.query("lifecycle:due", args))

    async def _record(self, report: CleanupReport, status: str, *, error: str | None = None) -> None:
        self._audited_at = time.monotonic()
        await self._convex.mutation("lifecycle:recordRun", {
            "runId": report.run_id, "operator": self._operator, "host": socket.gethostname(),
            "dryRun": report.dry_run, **({"sessionId": report.session} if report.session else {}),
            "status": status, "examined": report.examined, "deleted": report.deleted,
            "bytesDeleted": report.bytes_deleted, "failed": report.failed,
            "gaveUp": report.gave_up, "skipped": report.skipped, "errors": report.errors,
            **({"error": error} if error else {})})

    async def refresh_backlog(self) -> dict[str, Any]:
        """Reads the backlog from Convex into the gauges; returns it."""
        backlog = dict(await self._convex.query("lifecycle:backlog", {"bucket": self._bucket}))
        _backlog.pending = int(backlog["pending"])
        _backlog.failed = int(backlog["failed"])
        _backlog.oldest_due_at_ms = backlog.get("oldestDueAt")
        return backlog

    async def run(self, stop: asyncio.Event, *, interval_s: float) -> None:
        """The daemon's supervised task: a pass now, then every interval, until ``stop``.

        A transient failure (Convex or S3 unavailable) skips a pass; anything else ends the
        task, and so the daemon, loudly.
        """
        while not stop.is_set():
            try:
                report = await self.run_once()
            except RetryableError as exc:
                log.warning("cleanup pass skipped", extra={"error": str(exc)})
            else:
                if report.examined:
                    log.info("cleanup pass", extra=report.to_dict())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
