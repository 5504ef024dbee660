"""s3convex — keeps S3 objects and their Convex asset records in sync.

The public API for the platform's own Python code; everything else is internal::

    from s3convex import AssetAccess, S3Storage, load_settings

    settings = load_settings()                     # the environment, validated once
    async with AssetAccess.from_settings(settings) as access:
        issued = await access.url_for("alice", "video-assets", "sessions/s1/.../video.mp4")

    async with S3Storage.from_settings(settings) as storage:   # the producer's uploads
        result = await storage.upload_dir("out/intro", "s1", "intro", 3)

The names below are imported on first use, so ``import s3convex`` stays cheap and a command
that needs none of them (``s3convex run``) loads none of them. The layers behind this module
and what each may import are drawn in ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from s3convex.access import AssetAccess, IssuedUrl
    from s3convex.core.errors import (
        AccessDenied,
        AccessError,
        AssetGone,
        AssetNotFound,
        AssetUnavailable,
        ConfigError,
        Forbidden,
        NotFound,
        PermanentError,
        RetryableError,
        SyncError,
    )
    from s3convex.settings import Settings, load_settings
    from s3convex.storage import (
        FailedFile,
        KeyOutsideLayout,
        S3Storage,
        StatusSink,
        UploadedFile,
        UploadRefused,
        UploadResult,
        UploadSubscriber,
    )

__all__ = [
    "AccessDenied",
    "AccessError",
    "AssetAccess",
    "AssetGone",
    "AssetNotFound",
    "AssetUnavailable",
    "ConfigError",
    "FailedFile",
    "Forbidden",
    "IssuedUrl",
    "KeyOutsideLayout",
    "NotFound",
    "PermanentError",
    "RetryableError",
    "S3Storage",
    "Settings",
    "StatusSink",
    "SyncError",
    "UploadRefused",
    "UploadResult",
    "UploadSubscriber",
    "UploadedFile",
    "__version__",
    "load_settings",
]
_HOMES = {"AssetAccess": "s3convex.access", "IssuedUrl": "s3convex.access",
          "Settings": "s3convex.settings", "load_settings": "s3convex.settings",
          **dict.fromkeys(("S3Storage", "UploadResult", "UploadedFile", "FailedFile",
                           "UploadRefused", "KeyOutsideLayout", "StatusSink", "UploadSubscriber"),
                          "s3convex.storage")}


def __getattr__(name: str) -> Any:
    if name not in __all__ or name == "__version__":
        raise AttributeError(f"module 's3convex' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES.get(name, "s3convex.core.errors")), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
