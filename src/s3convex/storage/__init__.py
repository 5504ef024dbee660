"""``s3convex.storage``: the producer's side — files into S3, their status into Convex.

    from s3convex import S3Storage

    async with S3Storage.from_env() as storage:
        await storage.create_session("s1", owner="alice")
        result = await storage.upload_dir("out/intro", "s1", "intro", 3)

or, from a render script that is not async, ``s3convex.storage.sync.S3Storage`` with the same
methods. The modules, one concern each:

    storage    S3Storage: sessions, upload_file, upload_dir, retry_failed, commit, batch
    plan       what will be sent, checked before anything is (keys, files, metadata)
    keys       keys built from ASSET_KEY_LAYOUT's first pattern; content types
    transfer   the engine: one limiter over files and parts, streaming parts, SHA-256, retries
    body       a request body that counts what it sends (and takes back what is re-sent)
    events     UploadSubscriber: progress delivered to whoever listens
    status     StatusWriter (coalesced uploads:report) behind the StatusSink protocol
    spool      Spool: the durable offline spool (SQLite WAL, fsync per write, bounded)
    spool_sink SpoolingSink: Convex's sink, spooled while Convex is unreachable, delivered in order
    manifest   the version's manifest.json
    results    UploadedFile, FailedFile, UploadResult — plain data
    metrics    OpenTelemetry instruments
    sync       the blocking facade, on a private event loop thread
    errors     UploadRefused, KeyOutsideLayout, FileUnreadable, FileChanged, ChecksumMismatch,
               SpoolFull, SpoolUnusable
"""

from __future__ import annotations

from s3convex.storage.errors import (
    ChecksumMismatch,
    FileChanged,
    FileUnreadable,
    KeyOutsideLayout,
    SpoolFull,
    SpoolUnusable,
    UploadRefused,
)
from s3convex.storage.events import UploadSubscriber
from s3convex.storage.plan import PlannedFile
from s3convex.storage.results import FailedFile, UploadedFile, UploadResult
from s3convex.storage.spool import Spool
from s3convex.storage.spool_sink import SpoolingSink
from s3convex.storage.status import (
    ConvexStatusSink,
    ManifestRef,
    SessionProgress,
    StatusSink,
    StatusUpdate,
    StatusWriter,
)
from s3convex.storage.storage import S3Storage, new_run_id
from s3convex.storage.transfer import TransferConfig

__all__ = [
    "ChecksumMismatch",
    "ConvexStatusSink",
    "FailedFile",
    "FileChanged",
    "FileUnreadable",
    "KeyOutsideLayout",
    "ManifestRef",
    "PlannedFile",
    "S3Storage",
    "SessionProgress",
    "Spool",
    "SpoolFull",
    "SpoolUnusable",
    "SpoolingSink",
    "StatusSink",
    "StatusUpdate",
    "StatusWriter",
    "TransferConfig",
    "UploadRefused",
    "UploadResult",
    "UploadSubscriber",
    "UploadedFile",
    "new_run_id",
]
