"""``SpoolingSink``: a :class:`~s3convex.storage.status.StatusSink` that never loses a status
write to an unreachable Convex (R3.5, R6.1).

Each call goes to the sink it wraps (Convex's) under the bounded retry (``BOUNDED_RETRY``: 4
tries within ~1 s). If Convex is still unreachable (a ``RetryableError``), the call is appended
to the :class:`~s3convex.storage.spool.Spool` and reported as done: the status writer goes on,
and what it sends next is appended behind it. While the spool holds anything, every call goes
behind it — Convex sees the writes in the order they were made — and the spool is delivered,
oldest first, one attempt per entry:

- before each new call (no more often than the delivery backoff allows: 0.5 s doubling to 30 s
  while Convex stays away, so an outage costs one refused connection per pause, not per call);
- by a background task while the storage is open (so an idle process still catches up);
- when the storage opens — the entries a killed or crashed process left are delivered by the
  next one that uses the same spool directory — and once more, with the bounded retry, when it
  closes.

An entry leaves the spool only after Convex took it. A crash between the two sends it again;
``uploads:createSession``, ``uploads:report`` and ``uploads:setManifest`` take a repeated call as
a duplicate that writes nothing (convex/UPLOADS.md), and a report that arrives after newer ones
is ``stale`` by the ordering rule, so delivery is at-least-once and its effect exactly-once.

A report's entry holds its ``manifests`` references (``{sceneId, version, bucket, key}`` of the
report's session and run) when it carried any; an entry of an earlier version — a report without
them, a ``setManifest`` of its own — is delivered as it was written.

An entry Convex refuses (the function ran and threw) is dropped — sending it again cannot help —
with an error log line and a line in :attr:`SpoolingSink.errors`; a report's one refused update
or reference (``bad_request`` with its ``index`` or ``manifest``) is dropped alone and the rest
delivered. Any other permanent
answer (a wrong deploy key, no such function) stops the delivery, keeps every entry and is
raised: it names a configuration problem, not a bad entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, cast

from s3convex.adapters.convex import BOUNDED_RETRY
from s3convex.core.backoff import backoff_delay
from s3convex.core.errors import ConvexFunctionError, RetryableError
from s3convex.core.retrying import RetryBudget, with_retries
from s3convex.storage.spool import Entry, EntryKind, Spool
from s3convex.storage.status import (
    ManifestRef,
    SessionProgress,
    StatusSink,
    StatusUpdate,
    drop_refused,
)

log = logging.getLogger(__name__)

DELIVERY_PAUSE = 0.5  # seconds before the first retry of a delivery; doubles
DELIVERY_PAUSE_CAP = 30.0
IDLE_CHECK = 2.0  # seconds between the background task's looks at an empty spool


class SpoolingSink:
    """``inner``'s calls, spooled to ``spool`` while ``inner`` is unreachable."""

    def __init__(self, inner: StatusSink, spool: Spool, *, retry: RetryBudget = BOUNDED_RETRY,
                 close_retry: RetryBudget = BOUNDED_RETRY) -> None:
        self.inner = inner
        self.spool = spool
        self._retry = retry
        self._close_retry = close_retry
        self._lock = asyncio.Lock()  # one call or delivery at a time: the order is the spool's
        self._failed_deliveries = 0
        self._next_delivery = 0.0  # monotonic time before which delivery is not tried
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0  # entries delivered by this sink
        self.spooled = 0  # calls this sink appended
        self.errors: list[str] = []  # entries (or updates) Convex refused, dropped

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the spool and deliver what an earlier process left (if Convex is there)."""
        await asyncio.to_thread(self.spool.open)
        pending = await self.pending()
        if pending:
            log.info("upload spool holds status writes from before", extra={
                "spool": str(self.spool.path), "entries": pending})
            async with self._lock:
                await self._deliver(force=True)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="s3convex-upload-spool")

    async def aclose(self) -> None:
        """Stop the background delivery, try once more (bounded retry), close the spool."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            async with self._lock:
                with contextlib.suppress(RetryableError):
                    await with_retries(self._deliver_or_raise, self._close_retry)
            left = await self.pending()
            if left:
                log.warning("upload status left in the spool: delivered by the next S3Storage "
                            "on this spool directory", extra={
                                "spool": str(self.spool.path), "entries": left})
        finally:
            await asyncio.to_thread(self.spool.close)

    async def pending(self) -> int:
        """Entries waiting in the spool (this process's and others')."""
        return await asyncio.to_thread(len, self.spool)

    # --- StatusSink ----------------------------------------------------------------------------

    async def create_session(self, session_id: str, owner_id: str, run_id: str | None) -> bool:
        """True if Convex created it; False if it existed — or if the call was spooled (Convex
        decides when it is delivered; another owner's session is then an error logged)."""
        payload: dict[str, Any] = {"sessionId": session_id, "ownerId": owner_id, "runId": run_id}
        answer = await self._call("createSession", payload,
                                  lambda: self.inner.create_session(session_id, owner_id, run_id))
        return bool(answer)

    async def report(self, session_id: str, run_id: str, updates: Sequence[StatusUpdate],
                     manifests: Sequence[ManifestRef] = ()) -> SessionProgress | None:
        """Convex's totals, or None when spooled."""
        payload: dict[str, Any] = {"sessionId": session_id, "runId": run_id,
                                   "updates": list(updates)}
        if manifests:
            payload["manifests"] = [ref.report_args() for ref in manifests]
        answer = await self._call("report", payload, lambda: self.inner.report(
            session_id, run_id, updates, manifests))
        return cast(SessionProgress | None, answer)

    async def set_manifest(self, manifest: ManifestRef) -> None:
        payload = {"sessionId": manifest.session_id, "sceneId": manifest.scene_id,
                   "version": manifest.version, "bucket": manifest.bucket, "key": manifest.key,
                   "runId": manifest.run_id}
        await self._call("setManifest", payload, lambda: self.inner.set_manifest(manifest))

    # --- inside ------------------------------------------------------------------------------

    async def _call(self, kind: EntryKind, payload: dict[str, Any], direct: Any) -> Any:
        async with self._lock:
            if await self.pending() and not await self._deliver():
                await self._append(kind, payload, reason="behind the spool")
                return None
            try:
                return await with_retries(direct, self._retry)
            except RetryableError as exc:
                await self._append(kind, payload, reason=str(exc))
                self._delivery_failed()
                return None

    async def _append(self, kind: EntryKind, payload: dict[str, Any], *, reason: str) -> None:
        entry_id = await asyncio.to_thread(self.spool.append, kind, payload)  # may: SpoolFull
        self.spooled += 1
        log.warning("upload status spooled: Convex unreachable", extra={
            "kind": kind, "entry": entry_id, "session_id": payload.get("sessionId"),
            "spool_bytes": self.spool.bytes_held, "reason": reason})

    async def _deliver(self, *, force: bool = False) -> bool:
        """Deliver the spool in order; True once it is empty. Tries only when the backoff
        allows (or ``force``), one attempt per entry; stops at the first unreachable answer."""
        if not force and time.monotonic() < self._next_delivery:
            return False
        try:
            return await self._deliver_or_raise()
        except RetryableError as exc:
            self._delivery_failed()
            log.info("upload spool not delivered yet", extra={"error": str(exc)})
            return False

    async def _deliver_or_raise(self) -> bool:
        with self.spool.delivering() as mine:
            if not mine:  # another process delivers this spool now
                return False
            while entries := await asyncio.to_thread(self.spool.head, 50):
                for entry in entries:
                    await self._deliver_one(entry)
                    await asyncio.to_thread(self.spool.remove, entry.id)
                    self.delivered += 1
        self._failed_deliveries, self._next_delivery = 0, 0.0
        return True

    async def _deliver_one(self, entry: Entry) -> None:
        p = entry.payload
        try:
            if entry.kind == "createSession":
                await self.inner.create_session(p["sessionId"], p["ownerId"], p.get("runId"))
            elif entry.kind == "setManifest":
                await self.inner.set_manifest(ManifestRef(
                    session_id=p["sessionId"], scene_id=p["sceneId"], version=int(p["version"]),
                    bucket=p["bucket"], key=p["key"], run_id=p["runId"]))
            else:
                await self._deliver_report(entry, list(p["updates"]))
        except ConvexFunctionError as exc:  # the function ran and refused it: drop it
            self._refused(entry, str(exc))
        except (KeyError, TypeError, ValueError) as exc:  # spooled by a different version?
            self._refused(entry, f"malformed entry: {exc!r}")

    async def _deliver_report(self, entry: Entry, updates: list[StatusUpdate]) -> None:
        p = entry.payload
        refs = [ManifestRef(session_id=p["sessionId"], scene_id=m["sceneId"],
                            version=int(m["version"]), bucket=m["bucket"], key=m["key"],
                            run_id=p["runId"]) for m in p.get("manifests", ())]
        while updates or refs:
            try:
                await self.inner.report(p["sessionId"], p["runId"], updates, refs)
                return
            except ConvexFunctionError as exc:
                what = drop_refused(exc, updates, refs)
                if what is None:
                    raise
                self._refused(entry, f"{what}: {exc}")

    def _refused(self, entry: Entry, error: str) -> None:
        self.errors.append(f"spooled {entry.kind} #{entry.id}: {error}")
        log.error("spooled upload status refused by Convex, dropped", extra={
            "entry": entry.id, "kind": entry.kind, "error": error})

    def _delivery_failed(self) -> None:
        self._failed_deliveries += 1
        pause = backoff_delay(self._failed_deliveries, base=DELIVERY_PAUSE, cap=DELIVERY_PAUSE_CAP)
        self._next_delivery = time.monotonic() + pause

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(max(IDLE_CHECK if not self._failed_deliveries else 0.0,
                                    self._next_delivery - time.monotonic(), 0.05))
            try:
                if await self.pending():
                    async with self._lock:
                        await self._deliver()
            except Exception:  # never let delivery die while uploads go on; logged, tried again
                log.exception("upload spool delivery failed")
                self._delivery_failed()
