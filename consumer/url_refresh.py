"""Re-sign stored presigned URLs before they expire, so a read from Convex always finds one.

Each sweep pages ``urls:expiring`` for each of its buckets (available assets whose
``urlExpiresAt`` falls within the margin, soonest first), signs a new URL for each page, and writes the page back through
``urls:store``, which touches URL fields only and skips deleted assets and records that got a
fresher URL meanwhile. A URL that cannot be signed is recorded on the asset (``urlError``); the
last good one stays. With a public base configured the URL source is public-first, so a
presigned fallback is replaced by the public URL as soon as that can be made again.

The daemon runs :meth:`UrlRefresher.run` as a supervised task; ``s3convex url refresh`` runs
one sweep. A transient Convex or S3 failure skips a sweep; anything else ends the task (and
so the daemon) loudly.
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
from s3convex.adapters.convex_pages import convex_pages
from s3convex.core.errors import RetryableError, SyncError
from s3convex.core.ports import UrlSource

log = logging.getLogger(__name__)

EXPIRING = "urls:expiring"
STORE = "urls:store"


@dataclass
class RefreshReport:
    """One sweep: rows seen, and what ``urls:store`` did with each."""

    scanned: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def stored(self) -> int:
        return self.outcomes["stored"]

    def to_dict(self) -> dict[str, Any]:
        return {"scanned": self.scanned, **dict(sorted(self.outcomes.items()))}


class UrlRefresher:
    def __init__(
        self,
        convex: ConvexClient,
        urls: UrlSource,
        buckets: list[str],
        *,
        margin_s: float,
        interval_s: float,
        page_size: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._convex = convex
        self._urls = urls
        self._buckets = buckets
        self._margin_s = margin_s
        self._interval_s = interval_s
        self._page_size = page_size
        self._clock = clock

    async def refresh_once(self) -> RefreshReport:
        """One sweep over every URL of our buckets expiring within the margin."""
        before_ms = int((self._clock() + self._margin_s) * 1000)
        report = RefreshReport()
        for bucket in self._buckets:
            await self._sweep(bucket, before_ms, report)
        return report

    async def _sweep(self, bucket: str, before_ms: int, report: RefreshReport) -> None:
        # Stored rows leave the range (their expiry moves past `before`); the cursor continues
        # after the last row of a page either way, and the next page is read after the store.
        async for page in convex_pages(self._convex, EXPIRING, {"bucket": bucket, "before": before_ms},
                                       page_size=self._page_size):
            report.scanned += len(page.items)
            if page.items:
                updates = await asyncio.gather(*(self._sign(row) for row in page.items))
                report.outcomes.update(await self._convex.mutation(STORE, {"updates": updates}))

    async def _sign(self, row: dict[str, Any]) -> dict[str, Any]:
        try:
            url, expires_at = await self._urls.url_for(row["bucket"], row["key"])
        except SyncError as exc:
            log.warning("url refresh failed", extra={"key": row["key"], "error": str(exc)})
            return {"assetId": row["assetId"], "urlError": (str(exc) or type(exc).__name__)[:500]}
        update: dict[str, Any] = {"assetId": row["assetId"], "url": url}
        if expires_at is not None:
            update["urlExpiresAt"] = expires_at
        return update

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep now and then every interval until ``stop`` is set."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                report = await self.refresh_once()
            except RetryableError as exc:
                log.warning("url refresh skipped", extra={"error": str(exc)})
            else:
                if report.scanned:
                    log.info("urls refreshed", extra={
                        **report.to_dict(), "ms": round((time.monotonic() - started) * 1000, 1)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)
