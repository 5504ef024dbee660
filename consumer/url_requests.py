"""Sign the URLs the web app asked for: the sync service's side of ``access:requestUrl``.

When no stored URL fits a reader (a 5-minute source file, a stored URL about to expire, none at
all), ``access:requestUrl`` records a signing request in Convex's ``urlRequests``. Signing needs
the AWS credentials, which only this service holds, so the daemon polls for them:

- every ``URL_REQUEST_POLL_MS`` (500 ms), per bucket, ``urls:pendingRequests`` — the oldest
  pending requests, at most :data:`MAX_REQUESTS` (500). Idle, that is the whole cost: one small
  query per bucket per interval;
- each request is signed for the lifetime it carries (``ttlMs``, whole seconds, at least 1),
  capped by its kind's ``URL_EXPIRES_<KIND>`` on this side too. The URL source is the stored
  URLs' (public-first with a public base, else presigned), and each URL carries its
  configuration (``urlConfig``, the source's name, not the URL's own lifetime);
- one ``urls:fulfilRequests`` call stores the results. It is idempotent (a request no longer
  pending is left alone), so a retried call, or two replicas signing the same request, write
  nothing twice. A full batch is followed at once by the next poll; otherwise the next poll
  waits the interval.

Before signing, each request's object is looked at (HeadObject, :data:`HEAD_CONCURRENCY` at a
time) when the fulfiller is given an ``ObjectStore``, as the daemon does: an object S3 no longer
has (404) is marked ``missing`` in Convex (``lifecycle:markMissing``, with the time seen, R4.5)
and the request is closed, so no broken URL is handed out — ``fulfilRequests`` answers it
``gone`` and ``access:requestUrl`` then says ``{code: "gone", reason: "missing"}``. Here a HEAD is
affordable: one per user request that needs a fresh URL (one S3 round trip, ~3 ms on LocalStack,
5–50 ms on AWS, against the poll interval of 500 ms the request already waits); the refresher,
which re-signs in bulk, does not look.

A request whose URL cannot be made is answered with ``urlError`` (Convex marks it failed and
``requestUrl`` again retries); a transient signing error leaves it pending for the next poll.
When Convex is unavailable the poll backs off (the interval doubled per failure, at most
:data:`MAX_BACKOFF_S`) and says so once, and again once it is back. Anything else ends the task,
and so the daemon, loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from s3convex.adapters.convex import ConvexClient
from s3convex.core.errors import RetryableError, SyncError
from s3convex.core.ports import ObjectStore, UrlSource

log = logging.getLogger(__name__)

PENDING = "urls:pendingRequests"
FULFIL = "urls:fulfilRequests"
# convex/urls.ts MAX_REQUESTS: pendingRequests answers, and fulfilRequests takes, at most this many.
MAX_REQUESTS = 500
MAX_BACKOFF_S = 30.0
MARK_MISSING = "lifecycle:markMissing"
HEAD_CONCURRENCY = 16  # HeadObject calls in flight per poll (the S3 client's pool is small)
MISSING_ERROR = "object missing from S3"


@dataclass
class RequestsReport:
    """One poll: pending requests seen, what ``urls:fulfilRequests`` did with each, and how
    many were left pending for the next poll (a transient signing error)."""

    pending: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    deferred: int = 0
    full: bool = False  # some bucket answered a whole batch: more may be waiting

    def to_dict(self) -> dict[str, Any]:
        return {"pending": self.pending, **dict(sorted(self.outcomes.items())),
                **({"deferred": self.deferred} if self.deferred else {})}


class UrlRequests:
    def __init__(
        self,
        convex: ConvexClient,
        urls: UrlSource,
        buckets: list[str],
        *,
        interval_s: float,
        lifetime_for: Callable[[str], int],
        batch: int = MAX_REQUESTS,
        objects: ObjectStore | None = None,
    ) -> None:
        """``lifetime_for(kind)``: the longest life of a URL of that kind (URL_EXPIRES_<KIND>);
        ``objects``: HEAD each object first and mark a 404 ``missing`` (None: sign blindly)."""
        if not 1 <= batch <= MAX_REQUESTS:
            raise ValueError(f"batch must be 1..{MAX_REQUESTS}")
        self._convex = convex
        self._urls = urls
        self._buckets = buckets
        self._interval_s = interval_s
        self._lifetime_for = lifetime_for
        self._batch = batch
        self._objects = objects
        self._heads = asyncio.Semaphore(HEAD_CONCURRENCY)

    async def fulfil_once(self) -> RequestsReport:
        """One poll of every bucket: sign what is pending and store it."""
        report = RequestsReport()
        for bucket in self._buckets:
            rows: list[dict[str, Any]] = await self._convex.query(
                PENDING, {"bucket": bucket, "limit": self._batch})
            if not rows:
                continue
            report.pending += len(rows)
            report.full = report.full or len(rows) >= self._batch
            signed = await asyncio.gather(*(self._sign(row) for row in rows))
            fulfilments = [item for item in signed if item is not None]
            report.deferred += len(rows) - len(fulfilments)
            if fulfilments:
                report.outcomes.update(await self._convex.mutation(FULFIL, {"fulfilments": fulfilments}))
        return report

    def lifetime_s(self, row: dict[str, Any]) -> int:
        """What the request may live (its ttlMs), never longer than its kind allows here."""
        asked = int(row["ttlMs"]) // 1000
        return max(1, min(asked, self._lifetime_for(row.get("kind") or "other")))

    async def _sign(self, row: dict[str, Any]) -> dict[str, Any] | None:
        try:
            if self._objects is not None and not await self._exists(row):
                # Marked missing first: fulfilRequests then finds the asset unavailable and
                # closes the request as gone (the error text is kept only if it raced back).
                return {"requestId": row["requestId"], "urlError": MISSING_ERROR}
            signed = await self._urls.url_for(row["bucket"], row["key"], expires_in=self.lifetime_s(row))
        except RetryableError as exc:  # S3 or the network: leave it pending, the next poll retries
            log.warning("url request deferred", extra={"key": row["key"], "error": str(exc)})
            return None
        except SyncError as exc:
            log.warning("url request failed", extra={"key": row["key"], "error": str(exc)})
            return {"requestId": row["requestId"], "urlError": (str(exc) or type(exc).__name__)[:500]}
        return {"requestId": row["requestId"], **signed.stored_fields()}

    async def _exists(self, row: dict[str, Any]) -> bool:
        """HeadObject; on a 404 the asset is marked missing with the time it was seen."""
        seen_at = int(time.time() * 1000)
        async with self._heads:
            assert self._objects is not None
            head = await self._objects.head(row["bucket"], row["key"])
        if head is not None:
            return True
        marked = await self._convex.mutation(MARK_MISSING, {
            "bucket": row["bucket"], "key": row["key"], "seenAt": seen_at})
        log.warning("url request: object missing from S3", extra={"key": row["key"], "marked": marked})
        return False

    async def run(self, stop: asyncio.Event) -> None:
        """Poll now and then every interval until ``stop`` is set; at once again after a full batch."""
        failures = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                report = await self.fulfil_once()
            except RetryableError as exc:
                failures += 1
                if failures == 1:
                    log.warning("url requests: polling paused", extra={"error": str(exc)})
            else:
                if failures:
                    log.info("url requests: polling resumed", extra={"failures": failures})
                    failures = 0
                if report.pending:
                    log.info("url requests fulfilled", extra={
                        **report.to_dict(), "ms": round((time.monotonic() - started) * 1000, 1)})
                if report.full and not report.deferred:  # more are waiting, and we make progress
                    continue
            wait = min(MAX_BACKOFF_S, self._interval_s * 2 ** min(failures, 16)) if failures else self._interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
