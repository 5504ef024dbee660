"""The errors of an upload, under the project's two roots (:mod:`s3convex.core.errors`).

    PermanentError
    ├── UploadRefused       nothing was uploaded: the plan failed its checks; .problems lists each
    │   └── KeyOutsideLayout  a key the daemon would not read as this session's (ASSET_KEY_LAYOUT)
    ├── FileUnreadable      a file could not be read while it was uploaded (gone, a directory, EIO)
    ├── FileChanged         a file's size or mtime changed while it was uploaded: its bytes are torn
    ├── ChecksumMismatch    S3 holds a different checksum than the one computed from the file
    └── SpoolUnusable       the offline spool's directory or file cannot be used at all
    RetryableError
    └── SpoolFull           Convex is unreachable and the offline spool is at its bound: the
                            newest status write is refused (kept in memory, tried again)

S3's own answers arrive already mapped by :mod:`s3convex.adapters.aws`; :func:`explain_checksum_refusal`
adds what to do when an S3-compatible store refuses the checksums of an upload.
"""

from __future__ import annotations

from collections.abc import Sequence

from s3convex.core.errors import PermanentError, RetryableError, StorageError, SyncError

# What S3 (or a compatible store) answers when it does not accept a request's checksum.
CHECKSUM_REFUSALS = frozenset({
    "BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch", "XAmzContentSHA256Mismatch",
    "MissingContentMD5", "InvalidChecksum", "InvalidPart",
})
CHECKSUM_HINT = (
    "the store refused this upload's checksum; if the file did not change while it was read, "
    "the store may not support SDK checksums: try S3_UPLOAD_CHECKSUM=none and "
    "AWS_REQUEST_CHECKSUM_CALCULATION=when_required"
)


class UploadRefused(PermanentError):
    """The upload was refused before anything was sent; ``problems`` names each file and why."""

    def __init__(self, problems: Sequence[str], *, operation: str | None = None) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        head = "nothing was uploaded: " + ("1 problem" if count == 1 else f"{count} problems")
        super().__init__(f"{head}: " + "; ".join(self.problems), operation=operation)


class KeyOutsideLayout(UploadRefused):
    """A key the layout does not read as a session's asset, or one S3 cannot hold."""

    def __init__(self, problem: str) -> None:
        super().__init__([problem])
        self.problem = problem


class FileUnreadable(PermanentError):
    """A file could not be read while it was being uploaded."""


class FileChanged(PermanentError):
    """The file changed while it was uploaded (a render still writing it?); nothing was kept."""


class ChecksumMismatch(PermanentError):
    """S3 reported a checksum other than the one computed from the bytes sent."""


class SpoolUnusable(PermanentError):
    """S3_UPLOAD_SPOOL_DIR cannot hold a spool (not creatable, not writable)."""


class SpoolFull(RetryableError):
    """The spool is at S3_UPLOAD_SPOOL_MAX_BYTES: this write was not spooled, none was dropped."""


def explain_checksum_refusal(error: SyncError) -> SyncError:
    """``error`` with :data:`CHECKSUM_HINT` when it is a store's refusal of a checksum."""
    if isinstance(error, StorageError) and error.code in CHECKSUM_REFUSALS and error.hint is None:
        return error.with_hint(CHECKSUM_HINT)
    return error
