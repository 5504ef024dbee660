"""Every error this project raises, in two roots.

Third-party errors (botocore, httpx, Convex's HTTP answers) are mapped into this tree at the
adapter that sees them (``raise Mapped(...) from exc``), so the pipeline only ever decides
between two things: *try again later* or *this will never work*.

    SyncError
    ├── RetryableError            delays work, never loses it: the message is released and
    │   │                         comes back after a backoff
    │   ├── ConvexUnavailable     429, 5xx, timeout, connection refused
    │   └── StorageUnavailable    S3/SQS throttling, 5xx, network errors
    └── PermanentError            retrying cannot help: the message goes to the DLQ with a reason
        ├── ConvexFunctionError   the function threw (``status: "error"``); carries errorData
        ├── ConvexRequestError    the request itself was refused (400, 401, 403, 404)
        ├── StorageError          S3/SQS refused the request (access denied, no such bucket…)
        ├── PoisonMessage         the message cannot be decoded or is not ours to handle
        ├── ConfigError           a setting is missing or invalid
        └── AccessError           AssetAccess handed out no URL (the decision is audited)
            ├── AccessDenied      the principal neither owns the session nor holds a grant
            ├── AssetNotFound     no record of the asset
            ├── AssetGone         the asset was deleted; carries when
            └── AssetUnavailable  allowed, but no working URL could be had

Messages never contain secrets: the deploy key travels only in a request header, and
presigned URLs are redacted before they reach a log line (see :mod:`s3convex.consumer.logs`).
"""

from __future__ import annotations

from typing import Any


class SyncError(Exception):
    """Root of every error raised by this project."""


class RetryableError(SyncError):
    """A transient failure: the same work may succeed later."""


class PermanentError(SyncError):
    """A failure that retrying cannot fix."""


class ConvexUnavailable(RetryableError):
    """Convex answered 429/5xx, timed out or could not be reached."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class StorageUnavailable(RetryableError):
    """S3 or SQS was throttled, failing or unreachable."""


class ConvexFunctionError(PermanentError):
    """A Convex function ran and threw; ``error_data`` is its ConvexError payload, if any."""

    def __init__(self, path: str, message: str, error_data: Any = None) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.error_message = message
        self.error_data = error_data


class ConvexRequestError(PermanentError):
    """Convex refused the request (bad body, unknown route, not authorised)."""

    def __init__(self, message: str, *, status_code: int, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class StorageError(PermanentError):
    """S3 or SQS refused the request for a reason retrying will not change."""


class PoisonMessage(PermanentError):
    """A message that cannot be decoded or is not ours; ``reason`` travels with it to the DLQ."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConfigError(PermanentError):
    """A configuration value is missing or invalid; the message names the variable."""


class AccessError(PermanentError):
    """No URL was handed out; ``audit_id`` names the audit row Convex wrote for the decision."""

    def __init__(self, message: str, *, audit_id: str | None = None) -> None:
        super().__init__(message)
        self.audit_id = audit_id


class AccessDenied(AccessError):
    """The principal may not read the asset."""


class AssetNotFound(AccessError):
    """Convex holds no record of the asset."""


class AssetGone(AccessError):
    """The asset was deleted at ``deleted_at`` (ms since epoch): a clear answer, not a dead link."""

    def __init__(self, message: str, *, deleted_at: int, audit_id: str | None = None) -> None:
        super().__init__(message, audit_id=audit_id)
        self.deleted_at = deleted_at


class AssetUnavailable(AccessError):
    """Reading is allowed, but no working URL is stored and none could be signed."""
