"""``AssetAccess.get_url(principal, bucket, key)``: a URL only for who may read, and an audit row.

Convex decides (``access:authorize``): the principal must own the asset's session or hold an
active grant, kept in Convex. The same mutation picks the URL and writes the audit row (who,
what, when, outcome, expiry), so no URL ever leaves without its row. Before asking, this
service signs a fresh URL with the lifetime the key's kind allows (``URL_EXPIRES_<KIND>``, at
most 7 days) — local computation, no request; Convex hands out the stored URL instead when it
lives no longer than that (and not about to expire), or when it is public. The fresh URL of a
denied request is discarded unseen.

No URL → an :class:`~s3convex.core.errors.AccessError`: denied, not found, gone (with when it was
deleted, never a dead link) or unavailable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from s3convex.adapters.convex import ConvexClient
from s3convex.adapters.urls import PresignedUrls
from s3convex.core.errors import (
    AccessDenied,
    AssetGone,
    AssetNotFound,
    AssetUnavailable,
    ConvexFunctionError,
    SyncError,
)
from s3convex.core.layout import KeyLayout
from s3convex.settings import SEVEN_DAYS, Settings

log = logging.getLogger(__name__)

AUTHORIZE = "access:authorize"
# A stored URL closer than this to its expiry is not handed out: the reader needs time to use it.
MIN_REMAINING_S = 60


@dataclass(frozen=True, slots=True)
class IssuedUrl:
    url: str
    expires_at_ms: int | None  # None: a public URL, which does not expire
    source: Literal["stored", "fresh"]
    kind: str | None
    audit_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "expiresAt": self.expires_at_ms, "source": self.source,
                "kind": self.kind, "auditId": self.audit_id}


class AssetAccess:
    def __init__(
        self,
        convex: ConvexClient,
        presigner: PresignedUrls | None,
        *,
        layout: KeyLayout,
        expires_for: Callable[[str], int],
        min_remaining_s: int = MIN_REMAINING_S,
    ) -> None:
        self._convex = convex
        self._presigner = presigner
        self._layout = layout
        self._expires_for = expires_for
        self._min_remaining_s = min_remaining_s

    @classmethod
    def from_settings(cls, settings: Settings, convex: ConvexClient, s3_client: Any) -> AssetAccess:
        return cls(convex, PresignedUrls(s3_client, settings.urls.presign_expires),
                   layout=settings.aws.key_layout, expires_for=settings.urls.expires_for)

    async def get_url(self, principal: str, bucket: str, key: str) -> IssuedUrl:
        info = self._layout.classify(key)
        ttl = max(1, min(self._expires_for(info.kind), SEVEN_DAYS))
        args: dict[str, Any] = {
            "principal": principal,
            "bucket": bucket,
            "key": key,
            "maxTtlMs": ttl * 1000,
            "minRemainingMs": self._min_remaining_s * 1000,
        }
        if info.session_id is not None:
            args["sessionId"] = info.session_id
        fresh = await self._sign(bucket, key, ttl)
        if fresh is not None:
            args["fresh"] = fresh
        try:
            answer = await self._convex.mutation(AUTHORIZE, args)
        except ConvexFunctionError as exc:
            code = exc.error_data.get("code") if isinstance(exc.error_data, dict) else None
            if code == "BadPrincipal":
                raise AccessDenied(f"access denied: {principal!r} is not a valid principal") from exc
            raise
        return _issued(answer, principal, bucket, key)

    async def _sign(self, bucket: str, key: str, ttl: int) -> dict[str, Any] | None:
        if self._presigner is None:
            return None
        try:
            url, expires_at = await self._presigner.presign(bucket, key, ttl)
        except SyncError as exc:
            # The stored URL may still do; Convex says "unavailable" if it does not.
            log.warning("presign for access failed", extra={"key": key, "error": str(exc)})
            return None
        return {"url": url, "expiresAt": expires_at}


def _issued(answer: dict[str, Any], principal: str, bucket: str, key: str) -> IssuedUrl:
    # Every answer names its audit row; a URL never leaves without one.
    outcome, audit_id = answer["outcome"], answer.get("auditId")
    where = f"s3://{bucket}/{key}"
    if outcome == "granted":
        expires_at = answer.get("expiresAt")
        return IssuedUrl(url=answer["url"],
                         expires_at_ms=int(expires_at) if expires_at is not None else None,
                         source=answer["urlSource"], kind=answer.get("kind"),
                         audit_id=answer["auditId"])
    if outcome == "denied":
        raise AccessDenied(f"access denied: {principal!r} may not read {where}: {answer['reason']}",
                           audit_id=audit_id)
    if outcome == "gone":
        deleted_at = int(answer["deletedAt"])
        raise AssetGone(f"gone: {where} was deleted at {_iso(deleted_at)}",
                        deleted_at=deleted_at, audit_id=audit_id)
    if outcome == "not_found":
        raise AssetNotFound(f"not found: no asset {where}", audit_id=audit_id)
    raise AssetUnavailable(f"unavailable: {where}: {answer.get('reason', outcome)}", audit_id=audit_id)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
