"""Every error this project raises, in two roots.

Third-party errors (botocore, httpx, Convex's HTTP answers) are mapped into this tree at the
adapter that sees them — one table per library: botocore's in :mod:`s3convex.adapters.aws`,
httpx's and Convex's in :mod:`s3convex.adapters.convex` (``raise Mapped(...) from exc``) — so
the pipeline only ever decides between two things: *try again later* or *this will never work*.

    SyncError                     every error carries .operation, .code, .status (None if unknown)
    ├── RetryableError            delays work, never loses it; .retry_after: what the service asked
    │   ├── ConvexUnavailable     429, 5xx, timeout, connection refused
    │   └── StorageUnavailable    S3/SQS throttling, 5xx, network errors, QueueDeletedRecently
    └── PermanentError            retrying cannot help: the message goes to the DLQ with a reason
        ├── NotFound              the service said the thing named does not exist
        ├── Forbidden             the service refused these credentials (authorization)
        ├── StorageError          S3/SQS refused the request (bad argument, no credentials…)
        │   ├── StorageNotFound   NoSuchKey, NoSuchBucket, NonExistentQueue, 404 … (a NotFound)
        │   └── StorageForbidden  AccessDenied, InvalidAccessKeyId, 403 …       (a Forbidden)
        ├── ConvexRequestError    Convex refused the request itself (400 BadJsonBody …)
        │   ├── ConvexNotFound    404 (no such route or function path)        (a NotFound)
        │   └── ConvexForbidden   401/403: BadAdminKey, Unauthenticated …      (a Forbidden)
        ├── ConvexFunctionError   the function ran and threw (``status: "error"``); .error_data
        ├── PoisonMessage         the message cannot be decoded or is not ours to handle
        ├── ConfigError           a setting is missing or invalid
        └── AccessError           AssetAccess handed out no URL (the decision is audited)
            ├── AccessDenied      the principal neither owns the session nor holds a grant
            ├── AssetNotFound     no record of the asset
            ├── AssetGone         the asset was deleted; carries when
            └── AssetUnavailable  allowed, but no working URL could be had

``NotFound`` and ``Forbidden`` are *kinds*: a ``StorageNotFound`` is both a ``StorageError`` and
a ``NotFound``, so ``except NotFound`` branches on the answer whoever gave it, and ``except
StorageError`` still catches every refusal of S3/SQS. (``AccessDenied`` is the end-user
decision of :class:`~s3convex.access.AssetAccess`, not AWS's ``AccessDenied``, which is a
``StorageForbidden``.)

The message states what was asked and what the service answered, nothing more:
``GetQueueUrl s3convex-events: AccessDenied (HTTP 403): User: … is not authorized …`` —
operation, code, HTTP status, the service's own words, then the caller's ``hint`` if it added
one (:meth:`SyncError.with_hint`). Messages never contain secrets: the deploy key travels only in
a request header, and presigned URLs are redacted before they reach a log line (see
:mod:`s3convex.consumer.logs`).
"""

from __future__ import annotations

from typing import Any, Self


class SyncError(Exception):
    """Root of every error raised by this project.

    ``operation`` is what was asked ("GetQueueUrl s3convex-events", "assets:applyEvents"),
    ``code`` the service's error code (AWS's ``Error.Code``, Convex's system error code or its
    ``errorData.code``), ``status`` the HTTP status; each is None when there was none (a
    network error has no status, a setting no operation). ``message`` is the service's (or
    our) own explanation, ``hint`` what the caller suggests doing about it.
    """

    def __init__(self, message: str = "", *, operation: str | None = None, code: str | None = None,
                 status: int | None = None, hint: str | None = None) -> None:
        self.message = message
        self.operation = operation
        self.code = code
        self.status = status
        self.hint = hint
        super().__init__(self._render())

    def with_hint(self, hint: str) -> Self:
        """This error, its message ending in ``hint`` (e.g. which command or policy to look at)."""
        self.hint = hint
        self.args = (self._render(),)
        return self

    def _render(self) -> str:
        answer = self.code or ""
        if self.status is not None and self.code != str(self.status):
            answer = f"{answer} (HTTP {self.status})" if answer else f"HTTP {self.status}"
        text = ": ".join(part for part in (self.operation, answer, self.message) if part)
        return f"{text} — {self.hint}" if self.hint else text

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments do not survive the default pickling of exceptions.
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type[SyncError], args: tuple[Any, ...], state: dict[str, Any]) -> SyncError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class RetryableError(SyncError):
    """A transient failure: the same work may succeed later.

    ``retry_after`` is how long the service asked us to wait (``Retry-After``, already capped
    by the adapter), 0 when it did not say; the retry waits at least that long.
    """

    def __init__(self, message: str = "", *, operation: str | None = None, code: str | None = None,
                 status: int | None = None, hint: str | None = None, retry_after: float = 0.0) -> None:
        self.retry_after = retry_after
        super().__init__(message, operation=operation, code=code, status=status, hint=hint)


class PermanentError(SyncError):
    """A failure that retrying cannot fix."""


# --- kinds: what the answer means, whichever service gave it --------------------------------

class NotFound(PermanentError):
    """The service said the thing named (object, bucket, queue, route) does not exist."""


class Forbidden(PermanentError):
    """The service refused these credentials: authentication or authorization failed."""


# --- S3 and SQS (mapped in s3convex.adapters.aws) ------------------------------------------

class StorageUnavailable(RetryableError):
    """S3 or SQS was throttled, failing or unreachable."""


class StorageError(PermanentError):
    """S3 or SQS refused the request for a reason retrying will not change."""


class StorageNotFound(StorageError, NotFound):
    """S3 or SQS said the key, version, bucket, queue or configuration does not exist."""


class StorageForbidden(StorageError, Forbidden):
    """S3 or SQS refused these credentials (AccessDenied, an unknown key, a bad signature)."""


# --- Convex (mapped in s3convex.adapters.convex) -------------------------------------------

class ConvexUnavailable(RetryableError):
    """Convex answered 429/5xx, timed out or could not be reached."""


class ConvexRequestError(PermanentError):
    """Convex refused the request itself (bad body, unknown route, not authorised)."""


class ConvexNotFound(ConvexRequestError, NotFound):
    """Convex answered 404: no such route or function path."""


class ConvexForbidden(ConvexRequestError, Forbidden):
    """Convex refused the deploy key (401/403: BadAdminKey, Unauthenticated, Forbidden)."""


class ConvexFunctionError(PermanentError):
    """A Convex function ran and threw; ``error_data`` is its ConvexError payload, if any.

    ``code`` is ``error_data["code"]`` when the function threw ``ConvexError({code: …})``.
    """

    def __init__(self, path: str, message: str, error_data: Any = None, *,
                 status: int | None = None) -> None:
        self.path = path
        self.error_message = message
        self.error_data = error_data
        code = error_data.get("code") if isinstance(error_data, dict) else None
        super().__init__(message, operation=path, code=code if isinstance(code, str) else None,
                         status=status)


# --- ours ------------------------------------------------------------------------------------

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
    """The principal may not read the asset (the end user's decision, not AWS's AccessDenied)."""


class AssetNotFound(AccessError):
    """Convex holds no record of the asset."""


class AssetGone(AccessError):
    """The asset was deleted at ``deleted_at`` (ms since epoch): a clear answer, not a dead link."""

    def __init__(self, message: str, *, deleted_at: int, audit_id: str | None = None) -> None:
        super().__init__(message, audit_id=audit_id)
        self.deleted_at = deleted_at


class AssetUnavailable(AccessError):
    """Reading is allowed, but no working URL is stored and none could be signed."""
