"""The audit trail of replays: a ``replayRuns`` row in Convex before a run moves anything, and again with its outcome.

:class:`ReplayAudit` writes the row (``operations:recordReplayRun``) from a
:class:`~s3convex.consumer.ops.replayer.ReplayReport`, naming the operator and host; :func:`audited`
runs the work between the two writes — the first must succeed, so nothing moves unaudited, and
the outcome is written whatever happened to the work. ``s3convex replay runs`` reads the rows
back with ``operations:listReplayRuns``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from s3convex.adapters.convex import ConvexClient
from s3convex.consumer.ops.output import now_ms
from s3convex.consumer.ops.replayer import ReplayReport, current_operator

RECORD_RUN = "operations:recordReplayRun"
LIST_RUNS = "operations:listReplayRuns"


class ReplayAudit:
    """Writes the ``replayRuns`` row for a run: before it moves anything, and with its outcome."""

    def __init__(self, convex: ConvexClient, *, operator: str | None = None) -> None:
        self._convex = convex
        self._operator = operator or current_operator()
        self._host = socket.gethostname()

    async def record(self, report: ReplayReport, **kwargs: Any) -> None:
        row = report.to_audit(operator=self._operator, host=self._host, **kwargs)
        await self._convex.mutation(RECORD_RUN, row)


async def audited(audit: ReplayAudit, report: ReplayReport, work: Callable[[], Awaitable[Any]],
                  **audit_kwargs: Any) -> None:
    """Run ``work()`` between the "running" and the outcome audit writes. The first write must
    succeed (no unaudited moves); the outcome is written whatever happened to the work."""
    await audit.record(report, **audit_kwargs)
    try:
        await work()
    except BaseException as exc:
        if report.status == "running":
            interrupted = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
            report.status = "interrupted" if interrupted else "failed"
            report.error = report.error or str(exc) or type(exc).__name__
        raise
    finally:
        if report.status == "running":
            report.status = "completed"
        report.finished_ms = report.finished_ms or now_ms()
        await asyncio.shield(audit.record(report, **audit_kwargs))
