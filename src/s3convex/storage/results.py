"""What an upload produced, as plain data: :class:`UploadedFile`, :class:`FailedFile` and the
:class:`UploadResult` of a directory, which :meth:`S3Storage.retry_failed` takes back.

Checksums: ``sha256`` is the SHA-256 of the whole file, computed from the bytes as they were read
for sending; ``s3_checksum`` is what S3 holds and verified — the same value (base64) for an
object sent in one PUT, S3's *composite* SHA-256 (of the parts' SHA-256s, ``…-N``) for one sent
in N parts. Either can be checked against the file: ``sha256sum`` for the first, the parts at
``part_size`` for the second.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from s3convex.storage.plan import PlannedFile


@dataclass(frozen=True, slots=True)
class UploadedFile:
    file: PlannedFile
    run_id: str
    sha256: bytes  # the whole file's digest
    etag: str
    version_id: str | None
    s3_checksum: str | None  # what S3 holds: base64 (one PUT) or composite "…-N" (multipart)
    checksum_type: str | None  # "FULL_OBJECT" | "COMPOSITE", None when no checksum was sent
    s3_crc64nvme: str | None  # S3's own CRC64NVME, when it computed one (no checksum sent)
    parts: int  # 1 for a single PUT
    part_size: int
    attempt: int
    uploaded_at_ms: int
    seconds: float

    @property
    def key(self) -> str:
        return self.file.key

    @property
    def size(self) -> int:
        return self.file.size

    @property
    def sha256_hex(self) -> str:
        return self.sha256.hex()

    @property
    def sha256_base64(self) -> str:
        return base64.b64encode(self.sha256).decode()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.file.name, "key": self.file.key, "status": "available",
            "size": self.file.size, "contentType": self.file.content_type, "kind": self.file.kind,
            "sha256": self.sha256_hex, "s3Checksum": self.s3_checksum,
            "checksumType": self.checksum_type, "crc64nvme": self.s3_crc64nvme,
            "etag": self.etag, "versionId": self.version_id,
            "parts": self.parts, "partSize": self.part_size, "attempt": self.attempt,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class FailedFile:
    file: PlannedFile
    run_id: str
    error: str  # what was asked and what was answered (the error's message)
    error_type: str  # its class: StorageUnavailable, FileUnreadable, …
    retryable: bool  # a RetryableError: it may pass later as it is
    attempt: int
    seconds: float = 0.0

    @property
    def key(self) -> str:
        return self.file.key

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.file.name, "key": self.file.key, "status": "failed",
                "size": self.file.size, "kind": self.file.kind, "error": self.error,
                "errorType": self.error_type, "retryable": self.retryable,
                "attempt": self.attempt}


@dataclass(frozen=True, slots=True)
class UploadResult:
    """One ``upload_dir`` (and its retries): what succeeded, what failed, the manifest.

    The manifest is written only once every file is uploaded, so ``manifest`` is None while
    ``failed`` is not empty; ``retry_failed`` writes it when the last failure passes.
    """

    run_id: str
    bucket: str
    session_id: str
    scene_id: str
    version: int
    uploaded: tuple[UploadedFile, ...]
    failed: tuple[FailedFile, ...]
    manifest: UploadedFile | None = None
    manifest_error: str | None = None
    status_errors: tuple[str, ...] = field(default=())
    # Status writes waiting in the offline spool when the call returned (Convex unreachable):
    # delivered later, in order, by this storage or the next one on S3_UPLOAD_SPOOL_DIR.
    status_spooled: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and self.manifest is not None

    @property
    def bytes_uploaded(self) -> int:
        return sum(item.size for item in self.uploaded)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runId": self.run_id, "bucket": self.bucket, "sessionId": self.session_id,
            "sceneId": self.scene_id, "version": self.version, "ok": self.ok,
            "uploaded": len(self.uploaded), "failed": len(self.failed),
            "bytes": self.bytes_uploaded,
            "manifest": self.manifest.key if self.manifest else None,
            "manifestError": self.manifest_error,
            "statusErrors": list(self.status_errors),
            "statusSpooled": self.status_spooled,
            "files": [item.to_dict() for item in (*self.uploaded, *self.failed)],
        }
