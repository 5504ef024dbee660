"""The transfer engine: one file to one S3 object, in one PUT or in parts, under a shared limiter.

:class:`TransferConfig` is plain data (s3transfer's idea). A :class:`Limiter` of
``concurrency`` slots bounds the requests in flight over every file and every part alike: a
whole-file PUT holds one slot, each part one slot, from the moment its bytes are read until its
request is answered — so memory held is at most ``concurrency`` × max(threshold, part size),
whatever the files' sizes. Bodies are read, and hashed for their request, by one reader thread
for parts and one for whole-file PUTs, each in the order asked; a multipart file's own SHA-256
runs on the shared pool.

A file at or above ``multipart_threshold`` is sent in parts (CreateMultipartUpload, UploadPart…,
CompleteMultipartUpload). Each part is read from the file when its slot is free (a 2 GiB file
never sits in memory), every byte once, and sent as soon as its own SHA-256 is known; the file's
SHA-256 takes the parts' bytes in order, on the pool, while they are being sent — off the path
from one part to the next (measured on a busy 2-core machine: one part every ~60 ms, ~130 MB/s,
when reading a part and both its hashes came before the next part's read). Parts go out
concurrently; the first part that fails for good cancels the others and the upload is aborted
(no hidden, billed parts are left).

Checksums (``checksum="sha256"``): every request carries the SHA-256 of its bytes and S3 verifies
it (``BadDigest`` otherwise); a multipart object declares SHA-256 when it is created and S3 keeps
the composite checksum of its parts, which is compared with the one computed here. SHA-256
rather than CRC64NVME: hashlib computes it without botocore's optional native ``awscrt``, it is
cryptographic (the manifest's ``sha256`` is what ``sha256sum`` prints), S3 verifies it part by
part, and LocalStack has refused CRC64NVME on multipart completion. ``checksum="none"`` sends no
checksum of ours (stores that refuse them); the file's SHA-256 is computed and recorded anyway.
With ``sha256`` the signature does not hash a body a second time (:mod:`s3convex.storage.body`,
"Signing"): each byte is hashed twice in all, for its request and for the file.

Retries: botocore retries each request ("standard" mode, :mod:`s3convex.adapters.aws`); on top,
each unit of work here — a PUT, a part, the create and complete calls — is tried
``retry.attempts`` times in all by :func:`~s3convex.core.retrying.with_retries` with jittered
backoff, re-sending the bytes already read, when it failed in a way that may pass
(:class:`~s3convex.core.errors.RetryableError`). A refusal (4xx) is not retried.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import heapq
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from s3convex.core.errors import StorageNotFound, SyncError
from s3convex.core.retrying import RetryBudget, with_retries
from s3convex.settings import AwsSettings, UploadSettings
from s3convex.storage.body import BEFORE_SIGN_EVENTS, ProgressBody, skip_payload_hash
from s3convex.storage.errors import (
    ChecksumMismatch,
    FileChanged,
    FileUnreadable,
    explain_checksum_refusal,
)
from s3convex.storage.events import UploadSubscriber
from s3convex.storage.plan import RUN_ID_METADATA, PlannedFile
from s3convex.storage.results import UploadedFile

log = logging.getLogger(__name__)
T = TypeVar("T")

MiB = 1024 * 1024
MAX_PARTS = 10_000  # S3: parts of one multipart upload
MAX_PART_SIZE = 5 * 1024 * MiB  # S3: 5 GiB a part
READERS = 1  # threads that allocate and read bodies (see Transfer.__init__)


class ReadableFile(Protocol):
    def seek(self, offset: int, whence: int = ..., /) -> int: ...
    def readinto(self, buffer: memoryview, /) -> int | None: ...
    def close(self) -> None: ...


Opener = Callable[[Path], ReadableFile]  # how a file is opened for reading (tests instrument it)


def open_unbuffered(path: Path) -> ReadableFile:
    return path.open("rb", buffering=0)


@dataclass(frozen=True, slots=True)
class TransferConfig:
    multipart_threshold: int = 8 * MiB
    part_size: int = 8 * MiB
    concurrency: int = 10
    checksum: Literal["sha256", "none"] = "sha256"
    retry: RetryBudget = field(default_factory=lambda: RetryBudget(attempts=3, base=1.0, cap=10.0))
    kms_key_id: str | None = None

    @classmethod
    def from_settings(cls, upload: UploadSettings, aws: AwsSettings) -> TransferConfig:
        return cls(multipart_threshold=upload.multipart_threshold, part_size=upload.part_size,
                   concurrency=upload.concurrency, checksum=upload.checksum,
                   retry=RetryBudget(attempts=upload.attempts, base=1.0, cap=10.0),
                   kms_key_id=aws.kms_key_id)

    def part_size_for(self, size: int) -> int:
        """The configured part size, doubled until the file fits S3's 10,000 parts."""
        part = self.part_size
        while math.ceil(size / part) > MAX_PARTS:
            part *= 2
        return min(part, MAX_PART_SIZE)


class Limiter:
    """Slots for requests in flight; ``Limiter(n, within=shared)`` also takes one of ``shared``'s
    (always inner after outer, so two limiters never deadlock).

    A freed slot goes to the waiter with the highest ``priority`` (the transfer asks with its
    file's size), first come first served among equals: the largest files start first and the
    small ones fill in around their parts, and the upload does not end on a big file's parts
    alone with slots idle. In plain arrival order a file's parts queued, one by one, behind
    every small file asked for before (measured on a 40-file scene over wan: the two videos'
    parts started after the small files, and the last 0.5 s ran 2-6 requests of 10)."""

    def __init__(self, slots: int, *, within: Limiter | None = None) -> None:
        self._semaphore = asyncio.Semaphore(slots)  # the free slots, when nobody waits
        self._within = within
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []  # a heap: -priority, order
        self._order = itertools.count()

    async def acquire(self, priority: int = 0) -> None:
        await self._take(priority)
        if self._within is not None:
            try:
                await self._within.acquire(priority)
            except BaseException:
                self._give()
                raise

    def release(self) -> None:
        if self._within is not None:
            self._within.release()
        self._give()

    @contextlib.asynccontextmanager
    async def slot(self, priority: int = 0) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()

    async def _take(self, priority: int) -> None:
        if not self._waiting and not self._semaphore.locked():
            await self._semaphore.acquire()  # a free slot: returns at once
            return
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (-priority, next(self._order), ticket))
        try:
            await ticket  # done: a slot was handed over by _give
        except BaseException:
            if ticket.done() and not ticket.cancelled():  # handed over, then cancelled
                self._give()
            raise

    def _give(self) -> None:
        """Hand a slot to the best live waiter, or free it (a cancelled waiter stays in the heap
        until it comes up here)."""
        while self._waiting:
            _, _, ticket = heapq.heappop(self._waiting)
            if not ticket.done():
                ticket.set_result(None)
                return
        self._semaphore.release()


class FileProgress:
    """One file's upload as it goes: its events, and ``attempt``, the highest try any of its
    requests reached (counted on from ``first_attempt`` for a retry of the whole file)."""

    def __init__(self, file: PlannedFile, run_id: str, events: UploadSubscriber,
                 first_attempt: int) -> None:
        self.file, self.run_id, self.events = file, run_id, events
        self.attempt = first_attempt
        self._base = first_attempt - 1
        self.started = False

    def start(self) -> None:
        if not self.started:
            self.started = True
            self.events.on_started(self.file, self.run_id)

    def sent(self, delta: int) -> None:
        self.events.on_progress(self.file, self.run_id, delta)

    def retrying(self, attempt: int, delay: float, error: SyncError) -> None:
        self.attempt = max(self.attempt, self._base + attempt + 1)
        log.warning("upload request failed, retrying", extra={
            "run_id": self.run_id, "key": self.file.key, "attempt": self.attempt,
            "delay_s": round(delay, 3), "error": str(error)})
        self.events.on_retry(self.file, self.run_id, self.attempt, delay, error)


class Transfer:
    """Uploads :class:`PlannedFile` s with one S3 client (the mapped client of ``open_clients``)."""

    def __init__(self, s3: Any, config: TransferConfig, *, limiter: Limiter, executor: Executor,
                 opener: Opener = open_unbuffered,
                 clock: Callable[[], float] = time.time) -> None:
        self._s3 = s3
        self.config = config
        self._limiter = limiter
        self._executor = executor
        # Every body is allocated (and read, and hashed for its request) by this one thread, in
        # the order asked: glibc gives each thread its own malloc arena and keeps a freed part
        # buffer in it, so bodies made on ten pool threads held ~70 MB more at the peak of a
        # 1 GiB upload (measured: 225-255 MB; 166-168 MB with one reader, 183-191 MB with two).
        # The pool does the files' own hashes. The thread ends when this Transfer is dropped
        # (ThreadPoolExecutor's own).
        self._reader = ThreadPoolExecutor(READERS, thread_name_prefix="s3convex-read")
        # Whole-file PUTs (below the threshold) have a reader of their own: behind one reader, a
        # small file that got a slot waited for every part queued before it to be read and
        # hashed (10-50 ms an 8 MiB part under load) — a scene's json files queued behind its videos. Its
        # buffers are at most one threshold each, and a single big file never uses it.
        self._file_reader = ThreadPoolExecutor(1, thread_name_prefix="s3convex-read-file")
        self._opener = opener
        self._clock = clock
        events = getattr(getattr(s3, "meta", None), "events", None)
        if events is not None and config.checksum == "sha256":
            for name in BEFORE_SIGN_EVENTS:  # unique_id: registered once per client
                events.register(name, skip_payload_hash, unique_id=f"s3convex-payload:{name}")

    async def upload(self, file: PlannedFile, run_id: str, events: UploadSubscriber, *,
                     attempt: int = 1, limiter: Limiter | None = None,
                     progress: FileProgress | None = None) -> UploadedFile:
        """Send ``file``; raises the last error (a :class:`SyncError`) when it fails for good
        (``progress.attempt`` says how far it got)."""
        progress = progress or FileProgress(file, run_id, events, attempt)
        started = time.monotonic()
        limiter = limiter or self._limiter
        self._unchanged(file)
        try:
            if file.size >= self.config.multipart_threshold:
                answer = await self._multipart(file, progress, limiter)
            else:
                answer = await self._single(file, progress, limiter)
        except SyncError as exc:
            explain_checksum_refusal(exc)
            raise
        digest, stored, s3_checksum, checksum_type, parts, part_size = answer
        return UploadedFile(
            file=file, run_id=run_id, sha256=digest, etag=_etag(stored),
            version_id=stored.get("VersionId"), s3_checksum=s3_checksum,
            checksum_type=checksum_type, s3_crc64nvme=stored.get("ChecksumCRC64NVME"),
            parts=parts, part_size=part_size, attempt=progress.attempt,
            uploaded_at_ms=int(self._clock() * 1000), seconds=time.monotonic() - started)

    # --- one PUT -------------------------------------------------------------------------

    async def _single(self, file: PlannedFile, progress: FileProgress,
                      limiter: Limiter) -> tuple[Any, ...]:
        async with limiter.slot(file.size):
            progress.start()
            body, digest = await self._read(file, 0, file.size, None, reader=self._file_reader)
            self._unchanged(file)
            params = self._object_params(file, progress.run_id)
            if self.config.checksum == "sha256":
                params.update(ChecksumAlgorithm="SHA256", ChecksumSHA256=_b64(digest))
            try:
                answer = await self._send(body, progress, lambda: self._s3.put_object(
                    **params, Body=body, ContentLength=file.size))
            finally:
                body.close()
        s3_checksum = answer.get("ChecksumSHA256")
        if s3_checksum and self.config.checksum == "sha256" and s3_checksum != _b64(digest):
            raise ChecksumMismatch(f"S3 holds SHA-256 {s3_checksum}, the file's is {_b64(digest)}",
                                   operation=f"PutObject {file.bucket}/{file.key}")
        checksum_type = answer.get("ChecksumType") or ("FULL_OBJECT" if s3_checksum else None)
        return digest, answer, s3_checksum, checksum_type, 1, file.size

    # --- in parts ------------------------------------------------------------------------

    async def _multipart(self, file: PlannedFile, progress: FileProgress,
                         limiter: Limiter) -> tuple[Any, ...]:
        part_size = self.config.part_size_for(file.size)
        count = math.ceil(file.size / part_size)
        sha256 = self.config.checksum == "sha256"
        create = self._object_params(file, progress.run_id)
        if sha256:
            create["ChecksumAlgorithm"] = "SHA256"
        created = await self._retrying(progress, lambda: self._s3.create_multipart_upload(**create))
        upload_id = created["UploadId"]
        where = {"Bucket": file.bucket, "Key": file.key, "UploadId": upload_id}
        whole = hashlib.sha256()
        digests: list[bytes] = [b""] * count
        loop = asyncio.get_running_loop()
        try:
            parts: list[dict[str, Any]] = [{} for _ in range(count)]
            hashed: asyncio.Future[None] | None = None  # the previous part is in ``whole``
            async with asyncio.TaskGroup() as group:
                for number in range(1, count + 1):
                    offset = (number - 1) * part_size
                    length = min(part_size, file.size - offset)
                    await limiter.acquire(file.size)
                    progress.start()
                    turn: asyncio.Future[None] = loop.create_future()
                    task = group.create_task(self._part(
                        file, offset, length, number, where, progress, parts, digests, sha256,
                        whole, after=hashed, turn=turn))
                    # The slot goes back when the task ends, even one cancelled before it ever
                    # ran (its own finally would never run then) …
                    task.add_done_callback(lambda _: limiter.release())
                    # … and the next part's turn at the file's hash never waits for a part
                    # that will not take its own (the group is failing then anyway).
                    task.add_done_callback(lambda _, turn=turn: turn.done() or turn.cancel())
                    hashed = turn
            self._unchanged(file)
            composite = (_b64(hashlib.sha256(b"".join(digests)).digest()) + f"-{count}"
                         if sha256 else None)
            completed = await self._complete(file, where, parts, progress, composite)
        except BaseException as exc:
            await asyncio.shield(self._abort(where, progress))
            if isinstance(exc, BaseExceptionGroup):
                raise _first(exc) from None
            raise
        s3_checksum = completed.get("ChecksumSHA256")
        if s3_checksum and composite and s3_checksum != composite:
            raise ChecksumMismatch(f"S3 holds composite SHA-256 {s3_checksum}, the parts' is "
                                   f"{composite}", operation=f"CompleteMultipartUpload "
                                   f"{file.bucket}/{file.key}")
        checksum_type = completed.get("ChecksumType") or ("COMPOSITE" if composite else None)
        return whole.digest(), completed, s3_checksum or composite, checksum_type, count, part_size

    async def _part(self, file: PlannedFile, offset: int, length: int, number: int,
                    where: dict[str, Any], progress: FileProgress, parts: list[dict[str, Any]],
                    digests: list[bytes], sha256: bool, whole: Any, *,
                    after: asyncio.Future[None] | None, turn: asyncio.Future[None]) -> None:
        """Read part ``number`` and its SHA-256, feed it to the file's hash once ``after`` (the
        part before) is in it — then ``turn`` — and meanwhile send it."""
        body, digest = await self._read(file, offset, length, None)
        digests[number - 1] = digest
        users = [2]  # the request and the file's hash: the last to let go closes the body

        def let_go(*_: object) -> None:
            users[0] -= 1
            if not users[0]:
                body.close()

        feeding = asyncio.ensure_future(self._feed_in_turn(body, whole, after, turn, let_go))
        try:
            params: dict[str, Any] = {**where, "PartNumber": number, "ContentLength": body.size}
            if sha256:
                params.update(ChecksumAlgorithm="SHA256", ChecksumSHA256=_b64(digest))
            answer = await self._send(body, progress,
                                      lambda: self._s3.upload_part(**params, Body=body))
            await feeding
        except BaseException:
            feeding.cancel()
            raise
        finally:
            let_go()
        part = {"PartNumber": number, "ETag": answer["ETag"]}
        if sha256:  # "none": no checksum into Complete (LocalStack refuses SDK-added CRCs there)
            part["ChecksumSHA256"] = _b64(digest)
        parts[number - 1] = part

    async def _feed_in_turn(self, body: ProgressBody, whole: Any,
                            after: asyncio.Future[None] | None, turn: asyncio.Future[None],
                            let_go: Callable[..., None]) -> None:
        """``whole.update(body)`` on the pool once ``after`` is done, then ``turn`` done;
        ``let_go`` once the pool no longer reads the body — not before, even if cancelled."""
        try:
            if after is not None:
                await after
            job = asyncio.get_running_loop().run_in_executor(self._executor, _feed, whole, body)
        except BaseException:
            let_go()
            raise
        job.add_done_callback(let_go)
        await asyncio.shield(job)  # cancelled, the job still runs to its end before let_go
        turn.set_result(None)

    async def _complete(self, file: PlannedFile, where: dict[str, Any],
                        parts: list[dict[str, Any]], progress: FileProgress,
                        composite: str | None) -> dict[str, Any]:
        """CompleteMultipartUpload, retried. A retry answered NoSuchUpload may mean the first
        try completed and its answer was lost: the object S3 now holds is ours if it has this
        run's id, the file's size and (with checksums) the parts' composite SHA-256."""
        try:
            return await self._retrying(progress, lambda: self._s3.complete_multipart_upload(
                **where, MultipartUpload={"Parts": parts}))
        except StorageNotFound as exc:
            if exc.code != "NoSuchUpload":
                raise
            try:
                head = await self._s3.head_object(Bucket=file.bucket, Key=file.key,
                                                  ChecksumMode="ENABLED")
            except SyncError:
                raise exc from None
            ours = (head.get("Metadata", {}).get(RUN_ID_METADATA) == progress.run_id
                    and int(head.get("ContentLength", -1)) == file.size
                    and str(head.get("ETag", "")).strip('"').endswith(f"-{len(parts)}")
                    and (composite is None or head.get("ChecksumSHA256") in (None, composite)))
            if not ours:
                raise
            log.info("multipart upload had completed, its answer was lost", extra={
                "run_id": progress.run_id, "key": file.key})
            return head

    async def _abort(self, where: dict[str, Any], progress: FileProgress) -> None:
        try:
            await self._s3.abort_multipart_upload(**where)
        except SyncError as exc:  # a lifecycle rule (AbortIncompleteMultipartUpload) cleans up
            log.warning("abort of a failed multipart upload failed", extra={
                "run_id": progress.run_id, "key": progress.file.key, "error": str(exc)})

    # --- shared --------------------------------------------------------------------------

    async def _send(self, body: ProgressBody, progress: FileProgress,
                    call: Callable[[], Awaitable[T]]) -> T:
        """One request with ``body``, retried; its bytes counted once, whatever the tries."""
        body.bind(progress.sent)

        async def once() -> T:
            body.seek(0)
            try:
                answer = await call()
            except BaseException:
                body.abandon()
                raise
            body.settle()
            return answer

        return await self._retrying(progress, once)

    async def _retrying(self, progress: FileProgress, call: Callable[[], Awaitable[T]]) -> T:
        return await with_retries(call, self.config.retry, on_retry=progress.retrying)

    async def _read(self, file: PlannedFile, offset: int, length: int, whole: Any | None, *,
                    reader: Executor | None = None) -> tuple[ProgressBody, bytes]:
        """Bytes [offset, offset+length) of the file and their SHA-256, fed to ``whole`` too
        (the file's hash, when there are parts), on the pool: hashlib releases the GIL."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                reader or self._reader, _read_part, self._opener, file.path, offset, length,
                whole)
        except (OSError, EOFError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise FileUnreadable(f"{file.path}: {reason}",
                                 operation=f"read {file.name}") from exc

    def _unchanged(self, file: PlannedFile) -> None:
        try:
            now = file.path.stat()
        except OSError as exc:
            raise FileUnreadable(f"{file.path}: {exc.strerror or exc}",
                                 operation=f"read {file.name}") from exc
        if (now.st_size, now.st_mtime_ns) != (file.size, file.mtime_ns):
            raise FileChanged(f"{file.path} changed while it was uploaded (size {file.size} → "
                              f"{now.st_size}); nothing was kept", operation=f"read {file.name}")

    def _object_params(self, file: PlannedFile, run_id: str) -> dict[str, Any]:
        params: dict[str, Any] = {
            "Bucket": file.bucket, "Key": file.key, "ContentType": file.content_type,
            "Metadata": {**file.metadata, RUN_ID_METADATA: run_id},
        }
        if self.config.kms_key_id:
            params.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=self.config.kms_key_id)
        return params


def _read_part(opener: Opener, path: Path, offset: int, length: int,
               whole: Any | None) -> tuple[ProgressBody, bytes]:
    body = ProgressBody(length)
    with contextlib.closing(opener(path)) as handle:
        handle.seek(offset)
        view = body.fill(lambda buffer: handle.readinto(buffer) or 0)
    try:
        digest = hashlib.sha256(view).digest()
        if whole is not None:
            whole.update(view)
    finally:
        view.release()
    return body, digest


def _feed(whole: Any, body: ProgressBody) -> None:
    """The body's bytes into the file's hash (hashlib releases the GIL: other parts go on)."""
    with body.getbuffer() as view:
        whole.update(view)


def _first(group: BaseExceptionGroup) -> BaseException:
    """The error a failed part raised (a TaskGroup wraps it), rather than the group."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first(error)
        if not isinstance(error, asyncio.CancelledError):
            return error
    return group.exceptions[0]


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _etag(answer: dict[str, Any]) -> str:
    return str(answer.get("ETag", "")).strip('"')
