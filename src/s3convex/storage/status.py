"""Upload status in Convex while it happens: the :class:`StatusWriter` and its :class:`StatusSink`.

Each asset goes ``pending`` → ``uploading`` (bytes sent / total) → ``available`` | ``failed``; a
request that fails and will be tried again is reported as that attempt ``failed`` with its error
and ``nextRetryAt``, and the next attempt starts ``uploading`` again (Convex orders reports by run,
attempt, status and bytes: convex/ordering.ts, U1–U5). The writer is an
:class:`~s3convex.storage.events.UploadSubscriber`: it keeps the latest state of every file and,
from its own flush task, sends what changed as **one** ``uploads:report`` mutation per session
(and run) at most every ``interval`` seconds — a 2 GiB video's thousands of progress steps and a
whole directory's files coalesce into a few writes, so Convex never sees one document written
many times a second (OCC conflicts) and the mutation rate is bounded by the clock, not by the
upload. Flushes are sequential, so Convex sees each file's updates in order.

The first report after a quiet spell waits one interval too, so the ``pending`` states and the
first progress go in one mutation — unless a file no report has shown finishes first: then it
goes at once, so every other file is seen ``pending`` or ``uploading`` while it uploads (only a
file done before any report skips straight to its final, as coalescing skips any state shorter
than an interval). The issue's budget is ⌈files / 100⌉ + 2 writes a second: a ``pending`` report
at t=0, one per interval after it and the final one made a 1 GiB upload one over it.

Final records (``available``/``failed``) go out with the next flush (``S3_UPLOAD_ON_WRITE=true``)
or are held until :meth:`StatusWriter.commit` (``false``, or inside ``storage.batch(session)``):
then the progress is flushed and the finals and manifest references are written together. A
manifest reference travels in its run's report (``uploads:report``'s ``manifests``), after the
records it names: the last write of an ``upload_dir`` is one mutation, not two.

A report Convex cannot take now (unreachable, 5xx) stays pending and is sent again, merged with
what changed since, with a growing pause; one it refuses (a 4xx, a function error) is dropped and
kept in :attr:`StatusWriter.errors`. The writer talks to Convex only through the
:class:`StatusSink` protocol: :class:`ConvexStatusSink` is the real one, a test's fake is ten
lines, and the durable offline spool (:mod:`s3convex.storage.spool_sink`, with
``S3_UPLOAD_SPOOL_DIR``) is another sink wrapping it: what Convex cannot take is spooled there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, Protocol, TypedDict

from s3convex.adapters.convex import BOUNDED_RETRY, ConvexClient
from s3convex.core.backoff import backoff_delay
from s3convex.core.errors import ConvexFunctionError, RetryableError, SyncError
from s3convex.core.retrying import RetryBudget, with_retries
from s3convex.storage.events import UploadSubscriber
from s3convex.storage.plan import PlannedFile
from s3convex.storage.results import FailedFile, UploadedFile

log = logging.getLogger(__name__)

Status = Literal["pending", "uploading", "available", "failed"]
MAX_UPDATES_PER_REPORT = 500  # uploads:report takes at most this many per call
MAX_MANIFESTS_PER_REPORT = 10  # … and this many manifest references (MAX_REPORT_MANIFESTS)
CREATE_SESSION, REPORT, SET_MANIFEST = "uploads:createSession", "uploads:report", "uploads:setManifest"


class StatusUpdate(TypedDict):
    """One asset's state, as ``uploads:report`` takes it (optional fields left out, never null)."""

    bucket: str
    key: str
    status: Status
    bytesSent: int
    bytesTotal: int
    attempt: int
    error: NotRequired[str]  # failed only
    nextRetryAt: NotRequired[int]  # failed only: when the next attempt starts (ms)
    contentType: NotRequired[str]
    size: NotRequired[int]  # available only, as the object fields below
    etag: NotRequired[str]
    checksumSha256: NotRequired[str]
    checksumCrc64nvme: NotRequired[str]
    versionId: NotRequired[str]
    uploadedAt: NotRequired[int]
    sessionId: NotRequired[str]  # the key layout's reading, as the daemon sends it
    sceneId: NotRequired[str]
    version: NotRequired[int]
    kind: NotRequired[str]


@dataclass(frozen=True, slots=True)
class ManifestRef:
    session_id: str
    scene_id: str
    version: int
    bucket: str
    key: str
    run_id: str

    def report_args(self) -> dict[str, Any]:
        """As ``uploads:report`` takes it in ``manifests`` (the session and run are the report's)."""
        return {"sceneId": self.scene_id, "version": self.version, "bucket": self.bucket,
                "key": self.key}


@dataclass(frozen=True, slots=True)
class SessionProgress:
    """The session's totals as Convex counts them (``uploads:report``'s answer)."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    failed: int

    @classmethod
    def from_answer(cls, answer: Any) -> SessionProgress | None:
        session = answer.get("session") if isinstance(answer, dict) else None
        if not isinstance(session, dict):
            return None
        return cls(*(int(session.get(name) or 0) for name in (
            "filesDone", "filesTotal", "bytesDone", "bytesTotal", "failed")))


class StatusSink(Protocol):
    """Where upload status goes: Convex (:class:`ConvexStatusSink`), a fake, the spool in front.

    ``report``'s ``manifests`` are references of the report's session and run, applied after its
    updates. ``set_manifest`` is what earlier versions sent instead: the writer no longer calls
    it, a spool still delivers such entries through it."""

    async def create_session(self, session_id: str, owner_id: str,
                             run_id: str | None) -> bool: ...

    async def report(self, session_id: str, run_id: str, updates: Sequence[StatusUpdate],
                     manifests: Sequence[ManifestRef] = ()) -> SessionProgress | None: ...

    async def set_manifest(self, manifest: ManifestRef) -> None: ...


class ConvexStatusSink:
    """The ``uploads:*`` functions (internal: the deploy key). One attempt per call: the writer
    owns the retry of its reports, :meth:`create_session` asks for the bounded one."""

    def __init__(self, convex: ConvexClient, *, session_retry: RetryBudget = BOUNDED_RETRY) -> None:
        self._convex = convex
        self._session_retry = session_retry

    async def create_session(self, session_id: str, owner_id: str, run_id: str | None) -> bool:
        args: dict[str, Any] = {"sessionId": session_id, "ownerId": owner_id}
        if run_id is not None:
            args["runId"] = run_id
        answer = await self._convex.mutation(CREATE_SESSION, args, retry=self._session_retry)
        return bool(answer.get("created")) if isinstance(answer, dict) else False

    async def report(self, session_id: str, run_id: str, updates: Sequence[StatusUpdate],
                     manifests: Sequence[ManifestRef] = ()) -> SessionProgress | None:
        """In calls of at most MAX_UPDATES_PER_REPORT updates; the references go with the last
        (after every update they may name), MAX_MANIFESTS_PER_REPORT a call."""
        size, refs_size = MAX_UPDATES_PER_REPORT, MAX_MANIFESTS_PER_REPORT
        # (first update's index, updates, first reference's index, references)
        calls: list[tuple[int, list[StatusUpdate], int, list[ManifestRef]]] = [
            (start, list(updates[start:start + size]), 0, [])
            for start in range(0, len(updates), size)]
        for first in range(0, len(manifests), refs_size):
            refs = list(manifests[first:first + refs_size])
            if not first and calls:
                calls[-1] = (calls[-1][0], calls[-1][1], 0, refs)
            else:
                calls.append((len(updates), [], first, refs))
        progress = None
        for start, chunk, first, refs in calls:
            args: dict[str, Any] = {"sessionId": session_id, "runId": run_id, "updates": chunk}
            if refs:
                args["manifests"] = [ref.report_args() for ref in refs]
            try:
                answer = await self._convex.mutation(REPORT, args)
            except ConvexFunctionError as exc:  # the refused item's index, in all of them
                if rejected_index(exc) is not None and start:
                    exc.error_data = {**exc.error_data, "index": exc.error_data["index"] + start}
                if rejected_manifest(exc) is not None and first:
                    exc.error_data = {**exc.error_data,
                                      "manifest": exc.error_data["manifest"] + first}
                raise
            progress = SessionProgress.from_answer(answer) or progress
        return progress

    async def set_manifest(self, manifest: ManifestRef) -> None:
        await self._convex.mutation(SET_MANIFEST, {
            "sessionId": manifest.session_id, "sceneId": manifest.scene_id,
            "version": manifest.version, "bucket": manifest.bucket, "key": manifest.key,
            "runId": manifest.run_id})


def rejected_index(error: SyncError, field: str = "index") -> int | None:
    """The update ``uploads:report`` refused (ConvexError ``bad_request`` with its ``index``):
    the others may be sent again without it (convex/UPLOADS.md)."""
    if not isinstance(error, ConvexFunctionError) or error.code != "bad_request":
        return None
    index = error.error_data.get(field) if isinstance(error.error_data, dict) else None
    return int(index) if isinstance(index, int | float) and not isinstance(index, bool) else None


def rejected_manifest(error: SyncError) -> int | None:
    """The manifest reference ``uploads:report`` refused (``bad_request`` with ``manifest``)."""
    return rejected_index(error, "manifest")


def drop_refused(error: SyncError, updates: list[StatusUpdate], refs: list[ManifestRef],
                 ) -> str | None:
    """Take the update or reference ``uploads:report`` refused out of ``updates`` / ``refs``,
    so the rest can be sent again; what it was (its key), or None when ``error`` names none."""
    index, manifest = rejected_index(error), rejected_manifest(error)
    if index is not None and 0 <= index < len(updates):
        return str(updates.pop(index).get("key"))
    if manifest is not None and 0 <= manifest < len(refs):
        return f"manifest {refs.pop(manifest).key}"
    return None


class _Record:
    """What the writer knows of one file; ``version`` counts changes, ``sent`` the last sent."""

    __slots__ = ("attempt", "bytes_sent", "failures", "file", "final", "held", "run_id", "sent",
                 "shown", "status", "version", "waiting")

    def __init__(self, file: PlannedFile, run_id: str, attempt: int) -> None:
        self.file, self.run_id, self.attempt = file, run_id, attempt
        self.status: Status = "pending"
        self.bytes_sent = 0
        # Failed attempts that will be retried, not yet sent: never coalesced away, so Convex
        # records each failure (error, attempt, nextRetryAt) even when the retry follows fast.
        self.failures: list[StatusUpdate] = []
        self.waiting = False  # the last failure is the state until the next attempt sends bytes
        self.final: StatusUpdate | None = None  # available/failed, once done
        self.held = False  # the final waits for commit()
        self.shown = False  # a report has carried one of its states
        self.version, self.sent = 0, -1

    def changed(self) -> None:
        self.version += 1

    @property
    def dirty(self) -> bool:
        return self.version > self.sent

    def updates(self) -> list[StatusUpdate]:
        """What to send, in order: failures since the last flush, then the current state."""
        if self.final is not None and not self.held:
            return [*self.failures, self.final]
        if self.waiting:
            return list(self.failures)
        return [*self.failures, base_update(self.file, self.status, self.attempt, self.bytes_sent)]


def base_update(file: PlannedFile, status: Status, attempt: int, bytes_sent: int) -> StatusUpdate:
    update: StatusUpdate = {
        "bucket": file.bucket, "key": file.key, "status": status, "bytesSent": bytes_sent,
        "bytesTotal": file.size, "attempt": attempt, "contentType": file.content_type,
        "sessionId": file.session_id, "kind": file.kind,
    }
    if file.scene_id is not None:
        update["sceneId"] = file.scene_id
    if file.version is not None:
        update["version"] = file.version
    return update


def final_update(outcome: UploadedFile | FailedFile) -> StatusUpdate:
    if isinstance(outcome, FailedFile):
        update = base_update(outcome.file, "failed", outcome.attempt, 0)
        update["error"] = outcome.error
        return update
    update = base_update(outcome.file, "available", outcome.attempt, outcome.size)
    update.update(size=outcome.size, etag=outcome.etag, uploadedAt=outcome.uploaded_at_ms)
    # The checksums S3 holds (SHA-256, composite "…-N" for parts; or its own CRC64NVME), as the
    # daemon's HeadObject will read them, so the record does not change when the S3 event
    # arrives; the file's own SHA-256 when S3 reported none.
    if outcome.s3_checksum:
        update["checksumSha256"] = outcome.s3_checksum
    if outcome.s3_crc64nvme:
        update["checksumCrc64nvme"] = outcome.s3_crc64nvme
    if not outcome.s3_checksum and not outcome.s3_crc64nvme:
        update["checksumSha256"] = outcome.sha256_base64
    if outcome.version_id and outcome.version_id != "null":
        update["versionId"] = outcome.version_id
    return update


class StatusWriter(UploadSubscriber):
    def __init__(self, sink: StatusSink, *, interval: float = 0.5, defer_finals: bool = False,
                 final_retry: RetryBudget = BOUNDED_RETRY,
                 clock: Callable[[], float] = time.time) -> None:
        self._sink = sink
        self.interval = interval
        self._defer_all = defer_finals
        self._final_retry = final_retry
        self._clock = clock
        self._records: dict[tuple[str, str], _Record] = {}
        self._manifests: list[ManifestRef] = []  # to send with the next flush
        self._held_manifests: list[ManifestRef] = []  # to send at commit()
        self._batches: dict[str, int] = {}  # session → open storage.batch() blocks
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # something changed since the flush task last looked
        self._burst_start = -float("inf")  # when changes began after a quiet spell (monotonic)
        self._finished_unshown = asyncio.Event()  # a file no report has shown is done
        self._failures = 0  # consecutive flushes Convex could not take
        self._last_flush = -float("inf")
        self.errors: list[str] = []  # reports Convex refused (dropped)
        self.last_error: RetryableError | None = None  # why the last flush could not write
        self.sessions: dict[str, SessionProgress] = {}  # the latest totals Convex answered

    # --- what the uploader says (UploadSubscriber) ----------------------------------------

    def on_queued(self, file: PlannedFile, run_id: str, attempt: int) -> None:
        self._records[(file.bucket, file.key)] = record = _Record(file, run_id, attempt)
        record.changed()
        self._ensure_running()
        self._woken()

    def on_started(self, file: PlannedFile, run_id: str) -> None:
        if (record := self._record(file)) is not None:
            record.status = "uploading"
            record.changed()
            self._woken()

    def on_progress(self, file: PlannedFile, run_id: str, delta: int) -> None:
        if (record := self._record(file)) is not None:
            record.status = "uploading"
            record.bytes_sent = max(0, min(file.size, record.bytes_sent + delta))
            if delta > 0:
                record.waiting = False
            record.changed()
            self._woken()

    def on_retry(self, file: PlannedFile, run_id: str, attempt: int, delay: float,
                 error: SyncError) -> None:
        """Attempt ``attempt - 1`` failed: report it failed, with when ``attempt`` starts."""
        if (record := self._record(file)) is not None:
            failure = base_update(file, "failed", attempt - 1, record.bytes_sent)
            failure.update(error=str(error), nextRetryAt=int((self._clock() + delay) * 1000))
            record.failures.append(failure)
            record.attempt = attempt
            record.waiting = True
            record.changed()
            self._woken()

    def on_done(self, outcome: UploadedFile | FailedFile) -> None:
        if (record := self._record(outcome.file)) is None:
            return
        record.final = final_update(outcome)
        record.held = self.deferred(outcome.file.session_id)
        record.waiting = False
        if record.held and isinstance(outcome, UploadedFile):  # meanwhile: every byte sent
            record.status, record.bytes_sent = "uploading", outcome.size
        record.changed()
        self._woken()
        if not record.shown:  # the first report now, while the others upload
            self._finished_unshown.set()

    def manifest(self, ref: ManifestRef) -> None:
        """Reference a version's manifest (``uploads:setManifest``) with its final records."""
        (self._held_manifests if self.deferred(ref.session_id) else self._manifests).append(ref)
        self._ensure_running()
        self._woken()

    # --- batching ----------------------------------------------------------------------------

    def deferred(self, session_id: str) -> bool:
        return self._defer_all or self._batches.get(session_id, 0) > 0

    def begin_batch(self, session_id: str) -> None:
        self._batches[session_id] = self._batches.get(session_id, 0) + 1

    def end_batch(self, session_id: str) -> None:
        left = self._batches.get(session_id, 0) - 1
        if left > 0:
            self._batches[session_id] = left
        else:
            self._batches.pop(session_id, None)

    # --- writing -----------------------------------------------------------------------------

    async def flush(self, *, last: bool = False) -> None:
        """Send what changed now, one report per session and run (a failure stays pending).

        ``last``: the end of an ``upload_dir`` — sent without waiting out the rate gate, so the
        caller gets its result at once; one extra report per call, never per file."""
        async with self._lock:
            await self._flush(raise_retryable=False, gate=not last)


    async def commit(self, session_id: str | None = None) -> None:
        """Write the held finals and manifest references (of one session, or all) after the
        progress, retried on :attr:`final_retry`; raises if Convex still cannot take them."""
        async with self._lock:
            await with_retries(lambda: self._flush(raise_retryable=True), self._final_retry)
            held = [r for r in self._records.values() if r.held and r.final is not None
                    and (session_id is None or r.file.session_id == session_id)]
            for record in held:
                record.held = False
                record.changed()
            manifests = [m for m in self._held_manifests
                         if session_id is None or m.session_id == session_id]
            self._held_manifests = [m for m in self._held_manifests if m not in manifests]
            self._manifests.extend(manifests)
            await with_retries(lambda: self._flush(raise_retryable=True), self._final_retry)

    async def close(self) -> None:
        """Stop the flush task; commit what is held and flush the rest (raises if it cannot)."""
        if self._task is not None:
            async with self._lock:  # not in the middle of a report (it would be sent again)
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.commit()

    @property
    def undelivered(self) -> int:
        """Files whose latest state, and manifest references, not written yet (nor spooled)."""
        return sum(1 for r in self._records.values() if r.dirty) + len(self._manifests)

    def _record(self, file: PlannedFile) -> _Record | None:
        return self._records.get((file.bucket, file.key))

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="s3convex-upload-status")

    def _woken(self) -> None:
        if not self._wake.is_set():
            self._wake.set()
            self._burst_start = time.monotonic()

    async def _run(self) -> None:
        """One flush per interval (counted from the end of the last) while things change; the
        first after a quiet spell one interval after the first change, or at once when a file
        no report has shown finishes (the module's docstring)."""
        ended = -float("inf")
        while True:
            await self._wake.wait()
            pause = self.interval
            if self._failures:
                pause = max(pause, backoff_delay(self._failures, base=self.interval, cap=10.0))
            await asyncio.sleep(max(0.0, ended + pause - time.monotonic()))
            start_due = self._burst_start + self.interval - time.monotonic()
            if start_due > 0 and not self._finished_unshown.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._finished_unshown.wait(), start_due)
            self._wake.clear()
            self._finished_unshown.clear()
            try:
                await self.flush()
            except Exception:  # never let the status task die while uploads go on
                log.exception("upload status flush failed")
            ended = time.monotonic()
            if self.undelivered:  # not written (Convex away): try again
                self._wake.set()
                self._burst_start = -float("inf")

    async def _flush(self, *, raise_retryable: bool, gate: bool = True) -> None:
        if not self._manifests and not any(r.dirty for r in self._records.values()):
            return
        # The one rate gate: whoever flushes (the task, a commit), Convex gets at most one
        # report per session and run per interval — but for the last one of an upload_dir.
        wait = self._last_flush + self.interval - time.monotonic()
        if wait > 0 and gate:
            await asyncio.sleep(wait)
        self._last_flush = time.monotonic()
        # Taken with the records, so a manifest reference rides in the report that carries its
        # own record's final (its run's), after it: one queued while this flush waits on Convex
        # goes with the next.
        groups: dict[tuple[str, str], list[tuple[_Record, int, int]]] = {}
        for record in self._records.values():
            if record.dirty:
                group = groups.setdefault((record.file.session_id, record.run_id), [])
                group.append((record, record.version, len(record.failures)))
        manifests: dict[tuple[str, str], list[ManifestRef]] = {}
        for ref in self._manifests:
            manifests.setdefault((ref.session_id, ref.run_id), []).append(ref)
            groups.setdefault((ref.session_id, ref.run_id), [])
        for (session_id, run_id), items in groups.items():
            refs = manifests.get((session_id, run_id), [])
            updates = [update for record, _, _ in items for update in record.updates()]
            try:
                progress = await self._report(session_id, run_id, updates, refs)
            except RetryableError as exc:
                self._failures += 1
                self.last_error = exc
                log.warning("upload status not written, will retry", extra={
                    "session_id": session_id, "run_id": run_id, "updates": len(items),
                    "manifests": len(refs), "error": str(exc)})
                if raise_retryable:
                    raise
                continue
            except SyncError as exc:  # refused: sending it again cannot help
                self.errors.append(f"{REPORT} {session_id}: {exc}")
                log.error("upload status refused by Convex", extra={
                    "session_id": session_id, "run_id": run_id, "error": str(exc)})
            else:
                self._failures, self.last_error = 0, None
                if progress is not None:
                    self.sessions[session_id] = progress
            for record, version, failures in items:
                record.shown = True
                record.sent = max(record.sent, version)
                del record.failures[:failures]
            self._manifests = [m for m in self._manifests if m not in refs]
        self._forget_finished()

    async def _report(self, session_id: str, run_id: str, updates: list[StatusUpdate],
                      refs: list[ManifestRef]) -> SessionProgress | None:
        """One report; an update or reference Convex refuses is dropped (and kept in
        :attr:`errors`) and the rest is sent again, as convex/UPLOADS.md asks."""
        refs = list(refs)  # the caller's list says what was taken from the queue
        while True:
            try:
                return await self._sink.report(session_id, run_id, updates, refs)
            except ConvexFunctionError as exc:
                what = drop_refused(exc, updates, refs)
                if what is None:
                    raise
                reason = exc.error_data.get("reason") if isinstance(exc.error_data, dict) else None
                self.errors.append(f"{REPORT} {what}: {reason or exc}")
                log.error("upload status update refused by Convex", extra={
                    "session_id": session_id, "run_id": run_id, "key": what,
                    "error": str(reason or exc)})
                if not updates and not refs:
                    return None

    def _forget_finished(self) -> None:
        for where, record in list(self._records.items()):
            if record.final is not None and not record.held and not record.dirty:
                del self._records[where]
