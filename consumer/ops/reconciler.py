"""The run: walk the merge of S3 and Convex for one bucket, count the drift, hand it to the fixer.

:class:`Reconciler` reads the two streams of :mod:`s3convex.consumer.ops.reconcile_merge` and judges
each key. Without ``fix``, ``missing`` and ``changed`` drift is counted and reported as found;
``gone`` drift, and with ``fix`` every kind, is gathered into batches that
:class:`~s3convex.consumer.ops.reconcile_fixer.DriftFixer` confirms (HeadObject) and repairs, and is
reported once its batch is settled. Nothing grows with the bucket but the counters of
:class:`ReconcileSummary`, which is plain data: what the command prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from s3convex.adapters.convex import ConvexClient
from s3convex.adapters.signed_head import SignedHead
from s3convex.consumer.ops.output import iso_ms, new_run_id, now_ms
from s3convex.consumer.ops.reconcile_fixer import DriftFixer
from s3convex.consumer.ops.reconcile_merge import (
    Drift,
    ascending,
    judge,
    merge_by_key,
    prefetched,
    record_pages,
    s3_pages,
)
from s3convex.core.layout import KeyLayout
from s3convex.core.ports import UrlSource


@dataclass
class ReconcileSummary:
    run_id: str
    bucket: str
    prefix: str | None
    fix: bool
    started_ms: int = field(default_factory=now_ms)
    finished_ms: int | None = None
    objects: int = 0
    records: int = 0
    missing: int = 0
    gone: int = 0
    changed: int = 0
    fixed: int = 0
    unresolved: int = 0
    resolved_itself: int = 0
    marked_missing: int = 0  # records Convex holds `missing` (S3 lost them): no drift, reported

    @property
    def drift(self) -> int:
        return self.missing + self.gone + self.changed

    @property
    def consistent(self) -> bool:
        return self.drift == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "runId": self.run_id, "bucket": self.bucket, "prefix": self.prefix, "fix": self.fix,
            "consistent": self.consistent, "objects": self.objects, "records": self.records,
            "drift": self.drift, "missing": self.missing, "gone": self.gone, "changed": self.changed,
            "fixed": self.fixed, "unresolved": self.unresolved, "resolvedItself": self.resolved_itself,
            "markedMissing": self.marked_missing,
            "startedAt": iso_ms(self.started_ms), "finishedAt": iso_ms(self.finished_ms),
            "seconds": None if self.finished_ms is None else (self.finished_ms - self.started_ms) / 1000,
        }


class Reconciler:
    """Compare one bucket (under a prefix) with Convex; with ``fix``, repair the drift.

    Drift is reported through ``on_drift`` as it is found (and, when fixing or confirming,
    once its batch is settled), so nothing grows with the bucket but the counters.
    """

    def __init__(self, s3: Any, convex: ConvexClient, bucket: str, *, urls: UrlSource,
                 layout: KeyLayout | None = None, prefix: str = "", suffix: str = "",
                 fix: bool = False, page_size: int = 1000, convex_page_size: int = 500,
                 head_concurrency: int = 16, batch_size: int = 200,
                 hold_seconds: float = 60.0, signed_head: SignedHead | None = None) -> None:
        self._s3 = s3
        self._convex = convex
        self._bucket = bucket
        self._prefix = prefix
        self._suffix = suffix
        self._fix = fix
        self._page_size = page_size
        self._convex_page_size = convex_page_size
        self._batch_size = batch_size
        self.summary = ReconcileSummary(run_id=new_run_id(), bucket=bucket, prefix=prefix, fix=fix)
        self._fixer = DriftFixer(s3, convex, bucket, urls=urls, source=f"reconcile:{self.summary.run_id}",
                                 layout=layout, fix=fix, head_concurrency=head_concurrency,
                                 hold_seconds=hold_seconds, signed_head=signed_head)

    async def run(self, on_drift: Callable[[Drift], None] = lambda _d: None,
                  on_progress: Callable[[ReconcileSummary], None] = lambda _s: None) -> ReconcileSummary:
        summary = self.summary
        objects = ascending(prefetched(s3_pages(self._s3, self._bucket, self._prefix, self._page_size)),
                            lambda o: o.key, "the S3 listing")
        records = ascending(prefetched(record_pages(self._convex, self._bucket, self._prefix,
                                                    self._convex_page_size)),
                            lambda r: r["key"], "Convex's listByBucket")
        pending: list[Drift] = []
        seen = 0
        async for obj, record in merge_by_key(objects, records):
            key = obj.key if obj is not None else record["key"] if record is not None else ""
            if not key.endswith(self._suffix):
                continue
            summary.objects += obj is not None
            summary.records += record is not None
            seen += 1
            if seen % 1000 == 0:
                on_progress(summary)
            drift = judge(obj, record)
            if drift is None:
                if obj is None and record is not None and record.get("status") == "missing":
                    summary.marked_missing += 1
                continue
            if drift.kind != "gone" and not self._fix:
                self._count(drift)
                on_drift(drift)
                continue
            pending.append(drift)
            if len(pending) >= self._batch_size:
                await self._settle(pending, on_drift)
                pending = []
        if pending:
            await self._settle(pending, on_drift)
        summary.finished_ms = now_ms()
        on_progress(summary)
        return summary

    def _count(self, drift: Drift) -> None:
        setattr(self.summary, drift.kind, getattr(self.summary, drift.kind) + 1)

    async def _settle(self, drifts: list[Drift], on_drift: Callable[[Drift], None]) -> None:
        """Settle a batch through the fixer, then count and report each drift."""
        await self._fixer.settle(drifts)
        for drift in drifts:
            if drift.outcome == "resolved-itself":
                self.summary.resolved_itself += 1
                continue
            self._count(drift)
            if drift.outcome == "fixed":
                self.summary.fixed += 1
            elif drift.outcome == "unresolved":
                self.summary.unresolved += 1
            on_drift(drift)
