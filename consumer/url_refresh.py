"""Keep stored URLs valid and made the way the configuration says, so a read from Convex always
finds a working one.

Each sweep, for each of its buckets:

1. **Expiring** — pages ``urls:expiring`` (available assets whose ``urlExpiresAt`` falls within
   the margin, soonest first), signs a new URL for each page and writes the page back through
   ``urls:store`` before asking for the next.
2. **Out of configuration** (R8.3) — pages ``urls:outOfConfig`` for the source's configuration
   (``UrlSource.config``: ``public:<base>`` or ``presigned:<S3_PRESIGN_EXPIRES>``), the
   available records whose URL another configuration made (or none recorded), and re-signs and
   stores them the same way, at most ``config_limit`` (:data:`CONFIG_SWEEP_LIMIT`, 500) per
   bucket and sweep, in pages of ``page_size``. The cursor is kept between sweeps, so a record
   that cannot be re-signed does not block the others; a pass that reaches the end starts again
   from the beginning on the next sweep. N records out of line are in line after
   ⌈N / config_limit⌉ sweeps (+1 when a pass ends exactly at the limit), without a burst: one
   sweep makes at most config_limit / page_size ``urls:store`` calls of ≤ page_size updates
   (``urls:store`` takes ≤ MAX_URL_UPDATES = 500) and ≤ config_limit / page_size + 2 queries.

Every update carries the ``urlConfig`` of the URL it stores; ``urls:store`` touches URL fields
only, skips deleted assets, keeps a fresher URL of the same configuration and replaces one of
another configuration. A URL that cannot be signed is recorded on the asset (``urlError``); the
last good one stays. With a public base the URL source is public-first, so a presigned fallback
(which carries the presigned configuration, so it stays out of line) is replaced by the public
URL as soon as that can be made again.

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
from s3convex.consumer.telemetry import note_refresh, url_refresh_sweeps
from s3convex.core.errors import ConvexFunctionError, RetryableError, SyncError
from s3convex.core.ports import UrlSource

log = logging.getLogger(__name__)

EXPIRING = "urls:expiring"
OUT_OF_CONFIG = "urls:outOfConfig"
STORE = "urls:store"

# Records of another URL configuration re-signed per bucket and sweep, at most: 500 a minute at
# the default URL_REFRESH_INTERVAL, a few store calls of ≤ 100 updates each.
CONFIG_SWEEP_LIMIT = 500


@dataclass
class RefreshReport:
    """One sweep: expiring rows seen and what ``urls:store`` did with each; the same for the
    records of another configuration (``out_of_config`` ≤ the sweep's limit per bucket)."""

    scanned: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    out_of_config: int = 0
    realigned: Counter[str] = field(default_factory=Counter)

    @property
    def stored(self) -> int:
        return self.outcomes["stored"]

    def to_dict(self) -> dict[str, Any]:
        return {"scanned": self.scanned, **dict(sorted(self.outcomes.items())),
                "outOfConfig": self.out_of_config,
                **{f"outOfConfig.{name}": n for name, n in sorted(self.realigned.items())}}


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
        config_limit: int = CONFIG_SWEEP_LIMIT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._convex = convex
        self._urls = urls
        self._buckets = buckets
        self._margin_s = margin_s
        self._interval_s = interval_s
        self._page_size = page_size
        self._config_limit = config_limit
        self._clock = clock
        # Where the next out-of-configuration pass continues, per bucket (None: the start).
        self._config_cursors: dict[str, str | None] = {}

    async def refresh_once(self) -> RefreshReport:
        """One sweep: every URL of our buckets expiring within the margin, then up to
        ``config_limit`` records per bucket made under another configuration."""
        before_ms = int((self._clock() + self._margin_s) * 1000)
        report = RefreshReport()
        for bucket in self._buckets:
            await self._sweep(bucket, before_ms, report)
            await self._realign(bucket, report)
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

    async def _realign(self, bucket: str, report: RefreshReport) -> None:
        # Stored rows leave outOfConfig's ranges; the cursor continues after a page's last row
        # either way. Pages of page_size until the limit is spent; the last one only as large
        # as what is left, so a sweep never stores more than the limit.
        budget = self._config_limit
        cursor = self._config_cursors.get(bucket)
        for _ in range(-(-budget // self._page_size) + 2):  # the ranges' two ends may be empty
            if budget <= 0:
                break
            try:
                answer = await self._convex.query(OUT_OF_CONFIG, {
                    "bucket": bucket, "current": self._urls.config,
                    "paginationOpts": {"numItems": min(self._page_size, budget), "cursor": cursor}})
            except ConvexFunctionError as exc:
                if cursor is None:
                    raise
                # A cursor kept from an earlier sweep that Convex no longer takes (a redeploy):
                # start the pass again rather than stop the daemon over our own bookmark.
                log.warning("outOfConfig cursor refused; starting the pass again", extra={"error": str(exc)})
                cursor = None
                continue
            rows: list[dict[str, Any]] = answer["page"]
            if rows:
                report.out_of_config += len(rows)
                budget -= len(rows)
                updates = await asyncio.gather(*(self._sign(row) for row in rows))
                report.realigned.update(await self._convex.mutation(STORE, {"updates": updates}))
            if answer["isDone"]:
                cursor = None  # the pass is complete: the next one starts from the beginning
                break
            cursor = answer["continueCursor"]
        self._config_cursors[bucket] = cursor

    async def _sign(self, row: dict[str, Any]) -> dict[str, Any]:
        try:
            signed = await self._urls.url_for(row["bucket"], row["key"])
        except SyncError as exc:
            log.warning("url refresh failed", extra={"key": row["key"], "error": str(exc)})
            return {"assetId": row["assetId"], "urlError": (str(exc) or type(exc).__name__)[:500]}
        return {"assetId": row["assetId"], **signed.stored_fields()}

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep now and then every interval until ``stop`` is set."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                report = await self.refresh_once()
            except RetryableError as exc:
                log.warning("url refresh skipped", extra={"error": str(exc)})
                url_refresh_sweeps.add(1, {"outcome": "skipped"})
            else:
                note_refresh(report.outcomes + report.realigned)
                if report.scanned or report.out_of_config:
                    log.info("urls refreshed", extra={
                        **report.to_dict(), "ms": round((time.monotonic() - started) * 1000, 1)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)
