"""``S3Storage``: the producer's library — sessions, files and scene directories into S3, with
their status in Convex while it happens.

    async with S3Storage.from_env() as storage:            # the daemon's own settings
        await storage.create_session("s1", owner="alice")
        result = await storage.upload_dir("out/intro", "s1", "intro", 3)
        if result.failed:
            result = await storage.retry_failed(result)

Keys are laid out by ``ASSET_KEY_LAYOUT`` (:mod:`s3convex.storage.keys`), so the daemon files each
object under the same session, scene and version; everything that can be checked without S3 is
checked for every file before the first byte is sent (:mod:`s3convex.storage.plan`). The bytes go
through :mod:`s3convex.storage.transfer` (one limiter over files and parts, streaming from disk,
SHA-256 per request), progress to subscribers (:mod:`s3convex.storage.events`): the status writer
(:mod:`s3convex.storage.status`, coalesced ``uploads:report`` mutations), the metrics, a
caller's progress bar. Each ``upload_dir`` has one run id — in its log lines, its manifest, every
object's ``x-amz-meta-s3convex-run-id`` and every Convex record — kept by its retries.

``S3_UPLOAD_ON_WRITE=true``: a file's record is ``available`` as soon as it is uploaded; ``false``
(or inside ``async with storage.batch(session)``): the final records and manifest references
wait for :meth:`S3Storage.commit` (or the end of the block). Closing the storage commits what is
still held: the objects are in S3, and their records say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

from s3convex.adapters.aws import open_clients
from s3convex.adapters.convex import BOUNDED_RETRY, ConvexClient
from s3convex.core.errors import ConvexFunctionError, RetryableError, SyncError
from s3convex.core.layout import KeyLayout
from s3convex.core.retrying import ONE_ATTEMPT
from s3convex.settings import AwsSettings, ConvexSettings, Settings, UploadSettings, load_settings
from s3convex.storage.body import BEFORE_SEND_EVENTS, arm_before_send
from s3convex.storage.errors import SpoolFull
from s3convex.storage.events import Fanout, UploadSubscriber
from s3convex.storage.keys import build_key
from s3convex.storage.manifest import manifest_bytes, manifest_document
from s3convex.storage.metrics import UploadMetrics
from s3convex.storage.plan import MANIFEST_NAME, PlannedFile, plan_dir, plan_file
from s3convex.storage.results import FailedFile, UploadedFile, UploadResult
from s3convex.storage.spool import Spool, spool_path
from s3convex.storage.spool_sink import SpoolingSink
from s3convex.storage.status import ConvexStatusSink, ManifestRef, StatusSink, StatusWriter
from s3convex.storage.transfer import (
    FileProgress,
    Limiter,
    Opener,
    Transfer,
    TransferConfig,
    open_unbuffered,
)

log = logging.getLogger(__name__)

StrPath = str | PathLike[str]
T = TypeVar("T")


def new_run_id() -> str:
    """``20261201T120000123Z-1a2b3c4d``: sorts by start time (to the millisecond, as Convex
    orders runs: a later run supersedes an earlier one), unique across machines."""
    now = time.time()
    return (time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z-"
            + uuid.uuid4().hex[:8])


class S3Storage:
    """Uploads to the configured bucket; use as an async context manager (or :meth:`open` /
    :meth:`aclose`). ``sink`` replaces Convex (a test's fake; with S3_UPLOAD_SPOOL_DIR the
    spool wraps it), ``s3`` an already-open mapped S3 client, ``subscribers`` hear of every
    upload, ``opener`` opens files for reading (tests instrument it)."""

    def __init__(self, aws: AwsSettings, upload: UploadSettings | None = None, *,
                 convex: ConvexSettings | None = None, sink: StatusSink | None = None,
                 s3: Any | None = None, subscribers: Sequence[UploadSubscriber] = (),
                 opener: Opener = open_unbuffered) -> None:
        if sink is None and convex is None:
            raise ValueError("S3Storage needs convex settings (CONVEX_URL, …) or a status sink")
        self.bucket = aws.bucket
        self.settings = upload if upload is not None else UploadSettings()
        self.config = TransferConfig.from_settings(self.settings, aws)
        self.layout: KeyLayout = aws.key_layout
        self._aws, self._convex_settings = aws, convex
        self._sink, self._s3, self._opener = sink, s3, opener
        self._subscribers = tuple(subscribers)
        self._stack: contextlib.AsyncExitStack | None = None
        self._active_sink: StatusSink | None = None  # the given sink, or Convex's while open
        self._spool: SpoolingSink | None = None  # in front of it, with S3_UPLOAD_SPOOL_DIR
        self._writer: StatusWriter | None = None
        self._transfer: Transfer | None = None
        self._limiter: Limiter | None = None
        self._events = Fanout(())

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> S3Storage:
        """From the settings the daemon uses (``load_settings()``)."""
        return cls(settings.aws, settings.upload, convex=settings.convex, **options)

    @classmethod
    def from_env(cls, **overrides: Any) -> S3Storage:
        """From the environment (and ``.env``), as the daemon reads it; ``overrides`` by
        variable name (``S3_UPLOAD_ON_WRITE="false"``)."""
        return cls.from_settings(load_settings(**overrides))

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> S3Storage:
        await self.open()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.aclose(flush=exc_type is None)

    async def open(self) -> None:
        if self._stack is not None:
            return
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._s3 is None:
                clients = await stack.enter_async_context(open_clients(
                    self._aws, max_pool_connections=self.config.concurrency + 4,
                    signed_head=False, s3_checksums=(self.settings.request_checksum_calculation,
                                                     self.settings.response_checksum_validation)))
                s3 = clients.s3
            else:
                s3 = self._s3
            events = s3.meta.events
            for name in BEFORE_SEND_EVENTS:
                events.register(name, arm_before_send, unique_id=f"s3convex-progress:{name}")
                stack.callback(events.unregister, name, unique_id=f"s3convex-progress:{name}")
            sink = self._sink
            if sink is None:
                assert self._convex_settings is not None
                convex = await stack.enter_async_context(
                    ConvexClient.from_settings(self._convex_settings))
                # With a spool, its bounded retry is the one retry of a session's creation.
                sink = ConvexStatusSink(convex, session_retry=(
                    ONE_ATTEMPT if self.settings.spool_dir is not None else BOUNDED_RETRY))
            if self.settings.spool_dir is not None:
                self._spool = SpoolingSink(sink, Spool(
                    spool_path(self.settings.spool_dir, self._spool_target(sink)),
                    max_bytes=self.settings.spool_max_bytes))
                await self._spool.open()
                stack.push_async_callback(self._spool.aclose)
                sink = self._spool
            executor = ThreadPoolExecutor(self.config.concurrency,
                                          thread_name_prefix="s3convex-upload")
            stack.callback(executor.shutdown, wait=True, cancel_futures=True)
            self._limiter = Limiter(self.config.concurrency)
            self._writer = StatusWriter(sink, interval=self.settings.status_interval_ms / 1000,
                                        defer_finals=not self.settings.on_write)
            self._transfer = Transfer(s3, self.config, limiter=self._limiter, executor=executor,
                                      opener=self._opener)
            self._events = Fanout((self._writer, UploadMetrics(), *self._subscribers))
            self._active_sink = sink
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def aclose(self, *, flush: bool = True) -> None:
        """Commit what is held, flush the status, close the clients. ``flush=False`` (an error
        is on its way out): try the same, but log instead of raising."""
        if self._stack is None:
            return
        stack, self._stack = self._stack, None
        try:
            if self._writer is not None:
                try:
                    await self._writer.close()
                except SyncError as exc:
                    if flush:
                        raise
                    log.error("upload status not written at close", extra={"error": str(exc)})
        finally:
            await stack.aclose()

    # --- sessions ------------------------------------------------------------------------

    async def create_session(self, session_id: str, owner: str, *,
                             run_id: str | None = None) -> bool:
        """Create the session's Convex record, owned by ``owner`` (R2.1); False if it existed
        with that owner — or when Convex is unreachable and the call was spooled (an owner
        conflict then shows when it is delivered: logged, in ``storage.spool.errors``). Another
        owner's session: ``ConvexFunctionError`` code ``conflict``."""
        sink = self._opened_sink()
        try:
            return await sink.create_session(session_id, owner, run_id)
        except ConvexFunctionError as exc:
            if exc.code == "conflict":
                raise exc.with_hint(f"session {session_id!r} belongs to another owner") from None
            raise

    # --- uploads -------------------------------------------------------------------------

    async def upload_file(self, path: StrPath, key: str | None = None, *,
                          session: str | None = None, scene: str | None = None,
                          version: int | None = None, name: str | None = None,
                          content_type: str | None = None, metadata: Mapping[str, str] | None = None,
                          kind: str | None = None, run_id: str | None = None,
                          subscribers: Sequence[UploadSubscriber] = ()) -> UploadedFile:
        """One file, under ``key`` or the layout's key for (session, scene, version, name —
        the file's name by default). Raises the error of its last attempt when it fails (the
        record says ``failed`` with it)."""
        planned = plan_file(Path(path), bucket=self.bucket, layout=self.layout, key=key,
                            session=session, scene=scene, version=version, name=name,
                            content_type=content_type, metadata=metadata, kind=kind)
        events = self._opened_events().with_(subscribers)
        run_id = run_id or new_run_id()
        events.on_queued(planned, run_id, 1)
        outcome, error = await self._upload_one(planned, run_id, events, attempt=1)
        if error is not None:
            raise error
        assert isinstance(outcome, UploadedFile)
        return outcome

    async def upload_dir(self, path: StrPath, session: str, scene: str, version: int, *,
                         include: Sequence[str] = ("*",), exclude: Sequence[str] = (),
                         concurrency: int | None = None, metadata: Mapping[str, str] | None = None,
                         run_id: str | None = None,
                         subscribers: Sequence[UploadSubscriber] = ()) -> UploadResult:
        """Every file of ``path`` (selected by the globs) as scene ``scene``'s version
        ``version`` of session ``session``, then its manifest. Refuses (UploadRefused) before
        sending anything if any file fails its checks; otherwise returns what succeeded and
        what failed. ``concurrency`` lowers the requests in flight for this call (files and
        parts together) below the storage's ``S3_UPLOAD_CONCURRENCY``."""
        planned = await asyncio.to_thread(  # stats and opens every file: off the loop
            plan_dir, Path(path), bucket=self.bucket, layout=self.layout, session=session,
            scene=scene, version=version, include=include, exclude=exclude, metadata=metadata)
        events = self._opened_events().with_(subscribers)
        limiter = self._call_limiter(concurrency)
        run_id = run_id or new_run_id()
        errors_before = len(self._opened_writer().errors)
        log.info("upload started", extra={
            "run_id": run_id, "session_id": session, "scene_id": scene, "version": version,
            "files": len(planned), "bytes": sum(file.size for file in planned)})
        for file in planned:
            events.on_queued(file, run_id, 1)
        outcomes = await asyncio.gather(*(
            self._upload_one(file, run_id, events, attempt=1, limiter=limiter) for file in planned))
        result = UploadResult(
            run_id=run_id, bucket=self.bucket, session_id=session, scene_id=scene, version=version,
            uploaded=tuple(o for o, _ in outcomes if isinstance(o, UploadedFile)),
            failed=tuple(o for o, _ in outcomes if isinstance(o, FailedFile)))
        return await self._finish(result, events, limiter, errors_before)

    async def retry_failed(self, result: UploadResult, *, concurrency: int | None = None,
                           subscribers: Sequence[UploadSubscriber] = ()) -> UploadResult:
        """Upload again only what failed in ``result`` (same run id, attempts counted on), then
        the manifest once nothing is left failing."""
        events = self._opened_events().with_(subscribers)
        limiter = self._call_limiter(concurrency)
        errors_before = len(self._opened_writer().errors)
        log.info("upload retry started", extra={
            "run_id": result.run_id, "session_id": result.session_id,
            "files": len(result.failed)})

        async def again(failed: FailedFile) -> tuple[UploadedFile | FailedFile, SyncError | None]:
            try:
                file = failed.file.restat()
            except SyncError as exc:
                events.on_queued(failed.file, result.run_id, failed.attempt + 1)
                return self._failed(failed.file, result.run_id, events, exc, failed.attempt + 1, 0.0)
            events.on_queued(file, result.run_id, failed.attempt + 1)
            return await self._upload_one(file, result.run_id, events, attempt=failed.attempt + 1,
                                          limiter=limiter)

        outcomes = await asyncio.gather(*(again(failed) for failed in result.failed))
        retried = {o.key for o, _ in outcomes}
        result = dataclasses.replace(
            result,
            uploaded=(*(u for u in result.uploaded if u.key not in retried),
                      *(o for o, _ in outcomes if isinstance(o, UploadedFile))),
            failed=tuple(o for o, _ in outcomes if isinstance(o, FailedFile)),
            manifest_error=None, status_errors=())
        return await self._finish(result, events, limiter, errors_before)

    # --- status --------------------------------------------------------------------------

    async def commit(self, session: str | None = None) -> None:
        """Write the held final records and manifest references (S3_UPLOAD_ON_WRITE=false) of
        one session, or all; raises if Convex cannot take them after a bounded retry."""
        await self._opened_writer().commit(session)

    @contextlib.asynccontextmanager
    async def batch(self, session: str) -> AsyncIterator[S3Storage]:
        """``async with storage.batch("s1"):`` — the session's final records are held inside
        the block, whatever S3_UPLOAD_ON_WRITE says, and written together when it ends (also
        when it ends with an error: what is in S3 is recorded)."""
        writer = self._opened_writer()
        writer.begin_batch(session)
        try:
            yield self
        except BaseException:
            writer.end_batch(session)
            try:
                await writer.commit(session)
            except SyncError as exc:
                log.error("upload status not written", extra={"session_id": session,
                                                                "error": str(exc)})
            raise
        writer.end_batch(session)
        await writer.commit(session)

    # --- inside ------------------------------------------------------------------------------

    async def _upload_one(self, file: PlannedFile, run_id: str, events: UploadSubscriber, *,
                          attempt: int, limiter: Limiter | None = None,
                          ) -> tuple[UploadedFile | FailedFile, SyncError | None]:
        transfer = self._opened_transfer()
        started = time.monotonic()
        progress = FileProgress(file, run_id, events, attempt)
        try:
            uploaded = await transfer.upload(file, run_id, events, limiter=limiter,
                                             progress=progress)
        except SyncError as exc:
            return self._failed(file, run_id, events, exc, progress.attempt,
                                time.monotonic() - started)
        except Exception as exc:  # a bug: the others go on, the result says which file and why
            log.exception("upload failed unexpectedly", extra={"run_id": run_id, "key": file.key})
            error = SyncError(f"{type(exc).__name__}: {exc}", operation=f"upload {file.key}")
            return self._failed(file, run_id, events, error, progress.attempt,
                                time.monotonic() - started)
        log.info("uploaded", extra={"run_id": run_id, "key": file.key, "size": file.size,
                                    "parts": uploaded.parts, "attempt": uploaded.attempt,
                                    "seconds": round(uploaded.seconds, 3)})
        events.on_done(uploaded)
        return uploaded, None

    def _failed(self, file: PlannedFile, run_id: str, events: UploadSubscriber, error: SyncError,
                attempt: int, seconds: float) -> tuple[FailedFile, SyncError]:
        failed = FailedFile(file=file, run_id=run_id, error=str(error),
                            error_type=type(error).__name__,
                            retryable=isinstance(error, RetryableError), attempt=attempt,
                            seconds=seconds)
        log.warning("upload failed", extra={"run_id": run_id, "key": file.key,
                                            "attempt": attempt, "error": str(error)})
        events.on_done(failed)
        return failed, error

    async def _finish(self, result: UploadResult, events: UploadSubscriber,
                      limiter: Limiter | None, errors_before: int) -> UploadResult:
        """The manifest, once every file is uploaded (last, so a manifest means complete);
        then the status flushed at once, and the result."""
        if not result.failed and result.manifest is None:
            result = await self._write_manifest(result, events, limiter)
        writer = self._opened_writer()
        await writer.flush(last=True)  # now: one report more per upload_dir, not per file
        errors = list(writer.errors[errors_before:])
        if isinstance(writer.last_error, SpoolFull) and writer.undelivered:
            errors.append(f"the status of {writer.undelivered} files is neither in Convex nor in "
                          f"the spool, held in memory until the storage closes: {writer.last_error}")
        spooled = await self._spool.pending() if self._spool is not None else 0
        result = dataclasses.replace(result, status_errors=tuple(errors), status_spooled=spooled)
        log.info("upload finished", extra={
            "run_id": result.run_id, "session_id": result.session_id,
            "uploaded": len(result.uploaded), "failed": len(result.failed),
            "manifest": result.manifest.key if result.manifest else None,
            "status_spooled": spooled})
        return result

    async def _write_manifest(self, result: UploadResult, events: UploadSubscriber,
                              limiter: Limiter | None) -> UploadResult:
        key = build_key(self.layout, session=result.session_id, scene=result.scene_id,
                        version=result.version, name=MANIFEST_NAME)
        document = manifest_document(
            run_id=result.run_id, bucket=result.bucket, session_id=result.session_id,
            scene_id=result.scene_id, version=result.version, files=result.uploaded,
            now_ms=int(time.time() * 1000))
        with tempfile.TemporaryDirectory(prefix="s3convex-manifest-") as folder:
            path = Path(folder, MANIFEST_NAME)
            await asyncio.to_thread(path.write_bytes, manifest_bytes(document))
            file = plan_file(path, bucket=self.bucket, layout=self.layout, key=key,
                             name=MANIFEST_NAME, content_type="application/json")
            events.on_queued(file, result.run_id, 1)
            outcome, _ = await self._upload_one(file, result.run_id, events, attempt=1,
                                                limiter=limiter)
        if isinstance(outcome, FailedFile):
            return dataclasses.replace(result, manifest_error=outcome.error)
        self._opened_writer().manifest(ManifestRef(
            session_id=result.session_id, scene_id=result.scene_id, version=result.version,
            bucket=result.bucket, key=key, run_id=result.run_id))
        return dataclasses.replace(result, manifest=outcome, manifest_error=None)

    def _call_limiter(self, concurrency: int | None) -> Limiter | None:
        if concurrency is None:
            return None
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        return Limiter(concurrency, within=self._opened_limiter())

    def _opened_transfer(self) -> Transfer:
        return _opened(self._transfer)

    def _opened_writer(self) -> StatusWriter:
        return _opened(self._writer)

    def _opened_limiter(self) -> Limiter:
        return _opened(self._limiter)

    @property
    def status(self) -> StatusWriter:
        """The status writer (its ``sessions`` hold Convex's latest totals, ``errors`` what
        Convex refused)."""
        return self._opened_writer()

    @property
    def spool(self) -> SpoolingSink | None:
        """The offline spool in front of Convex (``S3_UPLOAD_SPOOL_DIR``), while open."""
        return self._spool if self._stack is not None else None

    def _spool_target(self, sink: StatusSink) -> str:
        # Which deployment the spooled writes are for: its URL (a given sink: its class).
        if self._convex_settings is not None:
            return self._convex_settings.base_url
        return f"{type(sink).__module__}.{type(sink).__qualname__}"

    def _opened_sink(self) -> StatusSink:
        if self._stack is None or self._active_sink is None:
            raise RuntimeError("open the storage first: `async with S3Storage.from_env() as storage`")
        return self._active_sink

    def _opened_events(self) -> Fanout:
        _opened(self._writer)
        return self._events


def _opened(part: T | None) -> T:
    if part is None:
        raise RuntimeError("open the storage first: `async with S3Storage.from_env() as storage`")
    return part
