"""What ``s3convex watch`` follows, and how: its Convex subscriptions, the state they show, the
lines a change makes, when to stop. No printing here: a :class:`Sink` is told of every change
(``s3convex.consumer.ops.watch`` has the JSON lines and the terminal view).

A :class:`Target` names the queries (:class:`Feed`) that show what is watched:

==================  ===============  ==================================================
watched             credentials      queries subscribed
==================  ===============  ==================================================
a session           the deploy key   ``sessions:get`` (its summary) and
                                     ``assets:listBySession``: one page of ``max_assets``
a session           a user's token   ``sessions:live``: its first page (the newest 100)
one asset (key)     the deploy key   ``assets:getByKey``
one asset (id)      a user's token   ``assets:view`` (``gone`` shows as ``deleted``)
==================  ===============  ==================================================

The bound: one page per list. ``assets:listBySession`` pages the session in creation order; the
page ends where its first run ended once the session held more than ``max_assets`` (Convex
keeps a reactive page's end), so a session that big shows its first ``max_assets`` and
``more``. A page that ended at the session's last asset stays open: every asset added later
joins it. ``sessions:live`` shows the newest 100 (the public page cap) and grows as assets
arrive; when Convex asks for the page to be split, it is subscribed afresh (the newest 100).

How the :class:`Watcher` follows them:

1. **Open**: each query once over HTTP with the same credentials (``LiveConvex.check``: a
   refused key or token, an unknown function, an unreachable server are known here, with the
   server's words), then subscribed. Unreachable: tried again under ``start_budget`` (a bounded
   backoff, :func:`~s3convex.core.retrying.with_retries`); anything else is the answer.
2. **Snapshot**: once every query delivered its first value, one line per asset (then a
   ``synced`` line); from then on a line per asset that changed, in order of arrival (its
   ``updatedAt``, then ``eventTime``), and a ``session`` line when the summary changes.
3. **Reconnect**: the WebSocket client reconnects by itself and sends the current values
   again; only assets that differ from what was shown make lines (and a ``synced`` line if
   the outage was noticed). If a subscription ends (its worker process exited) or fails after
   its first value, everything is subscribed again (step 1, under ``resubscribe_budget``): the
   HTTP check says what the failure is now (a revoked grant stops the watch, an outage waits),
   and the new snapshot again makes lines only for what changed.
4. **Probe**: every ``probe_every`` seconds the first query goes over HTTP again: a
   ``connection`` line (``down`` with the error, ``live``) when the server becomes unreachable
   and when it answers again, and the
   end of the watch (exit 1, with the server's answer) when it refuses the credentials — the
   WebSocket client never says either.
5. **Stop**: when ``until`` = (status, n) holds (n assets in that status), or at
   ``exit_after`` (an error if ``until`` did not hold by then); Ctrl-C cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from s3convex.consumer.logs import redact
from s3convex.consumer.ops.output import plain
from s3convex.core.errors import (
    ConvexFunctionError,
    PermanentError,
    RetryableError,
    SyncError,
)
from s3convex.core.retrying import RetryBudget, with_retries

Role = Literal["session", "assets", "asset", "live", "view"]
Line = dict[str, Any]

PUBLIC_PAGE_ITEMS = 100  # the public functions' page cap (convex/model/public.ts, MAX_PAGE_ITEMS)
# Waiting for an unreachable deployment: when the watch starts, ≤ 30 s (then exit 1 with why);
# after it ran, for as long as it takes. Waits are jittered, doubling to the cap.
START_BUDGET = RetryBudget(attempts=None, seconds=30.0, base=0.25, cap=4.0)
RESUBSCRIBE_BUDGET = RetryBudget(attempts=None, seconds=None, base=0.25, cap=8.0)
PROBE_SECONDS = 15.0

# What an asset line carries (when the record has it). No URL: a stored presigned URL is a
# credential; `urlExpiresAt` says enough. `upload` is the uploader's last report (convex/
# uploads.ts: status, attempt, bytesSent of bytesTotal, error, nextRetryAt), when there is one.
LINE_FIELDS = ("assetId", "bucket", "key", "status", "revision", "kind", "sessionId", "sceneId",
               "version", "size", "contentType", "eventTime", "updatedAt", "deletedAt",
               "urlExpiresAt", "error", "urlError")
UPLOAD_FIELDS = ("status", "attempt", "bytesSent", "bytesTotal", "error", "nextRetryAt")
_FREE_TEXT = frozenset({"error", "urlError"})


# --- what is watched ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Feed:
    role: Role
    path: str
    args: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Target:
    label: str
    feeds: tuple[Feed, ...]  # the first is the one the probe asks again
    bound: int | None = None  # assets shown at most (a page), None for one asset

    @classmethod
    def session(cls, session_id: str, *, as_user: bool, max_assets: int) -> Target:
        if as_user:
            page = {"numItems": PUBLIC_PAGE_ITEMS, "cursor": None}
            return cls(f"session {session_id}", (
                Feed("live", "sessions:live", {"sessionId": session_id, "paginationOpts": page}),
            ), PUBLIC_PAGE_ITEMS)
        page = {"numItems": max_assets, "cursor": None}
        return cls(f"session {session_id}", (
            Feed("session", "sessions:get", {"sessionId": session_id}),
            Feed("assets", "assets:listBySession", {"sessionId": session_id, "paginationOpts": page}),
        ), max_assets)

    @classmethod
    def key(cls, bucket: str, key: str) -> Target:
        return cls(f"{bucket}/{key}", (Feed("asset", "assets:getByKey", {"bucket": bucket, "key": key}),))

    @classmethod
    def asset_id(cls, asset_id: str) -> Target:
        page = {"numItems": 1, "cursor": None}
        return cls(f"asset {asset_id}", (
            Feed("view", "assets:view", {"assetId": asset_id, "paginationOpts": page}),))


def _is_gone(feed: Feed, error: SyncError) -> bool:
    """``assets:view`` of a deleted asset throws ``gone``: for a watch, that is its status."""
    return feed.role == "view" and isinstance(error, ConvexFunctionError) and error.code == "gone"


# --- the state the subscriptions show ------------------------------------------------------------

def asset_line(record: Mapping[str, Any]) -> Line:
    """The JSON line of an asset record (internal or public shape), whole numbers as integers."""
    values = {**record, "assetId": record.get("assetId") or record.get("_id")}
    line = _fields(values, LINE_FIELDS, {"type": "asset"})
    upload = values.get("upload")
    if isinstance(upload, Mapping):
        line["upload"] = _fields(upload, UPLOAD_FIELDS, {})
    return plain(line)


def _fields(record: Mapping[str, Any], names: tuple[str, ...], line: Line) -> Line:
    for name in names:
        value = record.get(name)
        if value is not None:
            line[name] = redact(value) if name in _FREE_TEXT and isinstance(value, str) else value
    return line


def upload_progress(line: Mapping[str, Any]) -> tuple[float, float] | None:
    """(bytes sent, bytes in all) of an asset being uploaded whose uploader reports them."""
    upload = line.get("upload")
    if not isinstance(upload, Mapping) or "uploading" not in (line.get("status"), upload.get("status")):
        return None
    sent, total = upload.get("bytesSent"), upload.get("bytesTotal")
    if not isinstance(sent, int | float) or not isinstance(total, int | float) or total <= 0:
        return None
    return float(sent), float(total)


def _arrival(line: Line) -> tuple[Any, ...]:
    return (line.get("updatedAt") or 0, line.get("eventTime") or 0, str(line.get("key", "")))


@dataclass
class WatchState:
    """What the subscriptions show now, and what the lines said last (to diff against)."""

    target: Target
    assets: dict[str, Line] = field(default_factory=dict)  # asset id → its line
    summary: dict[str, Any] | None = None
    more: bool = False  # the session has assets beyond the page shown
    connection: Literal["connecting", "live", "down"] = "connecting"
    problem: str | None = None  # what keeps it from being live
    shown: dict[str, Line] = field(default_factory=dict)
    shown_summary: dict[str, Any] | None = None
    changed_at: float | None = None  # time.time() of the last change

    def apply(self, feed: Feed, value: Any) -> bool:
        """Take a value of ``feed``; False when the page must be subscribed afresh."""
        if feed.role == "session":
            self.summary = plain(value["summary"]) if value else None
        elif feed.role == "asset":
            self._rows([value] if value else [])
        elif feed.role == "view":
            self._rows([value["asset"]])
        else:  # "assets" or "live": a page
            if value.get("pageStatus") in ("SplitRequired", "SplitRecommended"):
                return False
            self._rows(value["page"])
            self.more = not value["isDone"]
            if feed.role == "live":
                self.summary = plain(value["session"].get("summary"))
        return True

    def gone(self, error: ConvexFunctionError) -> None:
        """``assets:view`` says the asset was deleted: its last line, status ``deleted``."""
        deleted_at = error.error_data.get("deletedAt") if isinstance(error.error_data, dict) else None
        for asset_id, line in list(self.assets.items()):
            self.assets[asset_id] = plain({**line, "status": "deleted", "deletedAt": deleted_at})

    def _rows(self, records: list[Mapping[str, Any]]) -> None:
        self.assets = {line["assetId"]: line for line in map(asset_line, records)}

    def changes(self) -> list[Line]:
        """The lines for what differs from what was shown, in order of arrival; marks them shown."""
        lines = [line for asset_id, line in self.assets.items() if self.shown.get(asset_id) != line]
        lines.sort(key=_arrival)
        for asset_id in [a for a in self.shown if a not in self.assets]:
            lines.append({"type": "unlisted", "assetId": asset_id,
                          "key": self.shown.pop(asset_id).get("key")})
        for line in lines:
            if line["type"] == "asset":
                self.shown[line["assetId"]] = line
        if self.summary != self.shown_summary and (self.summary is not None
                                                   or self.shown_summary is not None):
            self.shown_summary = self.summary
            lines.append({"type": "session", "label": self.target.label, "summary": self.summary})
        if lines:
            self.changed_at = time.time()
        return lines

    def count(self, status: str) -> int:
        return sum(1 for line in self.assets.values() if line.get("status") == status)

    def counts(self) -> Counter[str]:
        return Counter(str(line.get("status")) for line in self.assets.values())


# --- the ports the watcher runs on --------------------------------------------------------------

class Subscription(Protocol):
    async def next(self) -> Any: ...
    def close(self) -> None: ...


class LiveSource(Protocol):
    """What the watcher needs of :class:`~s3convex.adapters.convex_live.LiveConvex`."""

    async def check(self, path: str, args: Mapping[str, Any]) -> Any: ...
    async def subscribe(self, path: str, args: Mapping[str, Any]) -> Subscription: ...
    async def reset(self) -> None: ...


class Sink(Protocol):
    """Told of every change: the state now and the lines it made (none: only the view moved)."""

    def update(self, state: WatchState, lines: list[Line]) -> None: ...


@dataclass(frozen=True, slots=True)
class StopRule:
    until: tuple[str, int] | None = None  # (status, n): stop once n assets have that status
    exit_after: float | None = None  # seconds


class _Deadline(Exception):
    pass


# --- the watcher -------------------------------------------------------------------------------

@dataclass
class _Item:
    generation: int
    feed: Feed | None  # None: the probe
    value: Any = None
    error: SyncError | None = None


class Watcher:
    """Follow ``target`` through ``live`` and tell ``sink``; :meth:`run` returns once ``stop``
    says so (see the module docstring)."""

    def __init__(self, live: LiveSource, target: Target, sink: Sink, stop: StopRule, *,
                 probe_every: float = PROBE_SECONDS, start_budget: RetryBudget = START_BUDGET,
                 resubscribe_budget: RetryBudget = RESUBSCRIBE_BUDGET,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.live = live
        self.target = target
        self.sink = sink
        self.stop = stop
        self.state = WatchState(target)
        self.probe_every = probe_every
        self.start_budget = start_budget
        self.resubscribe_budget = resubscribe_budget
        self.clock = clock
        self.generation = 0  # subscriptions opened so far
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._deadline: float | None = None
        self._probe: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self._deadline = None if self.stop.exit_after is None else self.clock() + self.stop.exit_after
        budget = self.start_budget
        reached = False
        try:
            while True:
                subscriptions = await self._before_deadline(
                    with_retries(self._open, budget, on_retry=self._retrying))
                budget = self.resubscribe_budget
                readers = [asyncio.create_task(self._read(feed, sub))
                           for feed, sub in zip(self.target.feeds, subscriptions, strict=True)]
                try:
                    if await self._follow():
                        return
                finally:
                    for reader in readers:
                        reader.cancel()
                    await asyncio.gather(*readers, return_exceptions=True)
                    await self.live.reset()
        except _Deadline:
            reached = True
        finally:
            if self._probe is not None:
                self._probe.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._probe
        if reached:
            self._at_deadline()  # raised out here: no _Deadline as its cause

    # one subscription generation ---------------------------------------------------------

    async def _open(self) -> list[Subscription]:
        """Check every query over HTTP, then subscribe to them all."""
        for feed in self.target.feeds:
            try:
                await self.live.check(feed.path, feed.args)
            except PermanentError as exc:
                if not _is_gone(feed, exc):
                    raise
        self.generation += 1
        return [await self.live.subscribe(feed.path, feed.args) for feed in self.target.feeds]

    async def _read(self, feed: Feed, subscription: Subscription) -> None:
        """Queue each value (or error) of one subscription. A query's error is one of its
        results (the next change may bring a value again); an ended subscription is the last."""
        generation = self.generation
        while True:
            try:
                value = await subscription.next()
            except RetryableError as exc:
                self._queue.put_nowait(_Item(generation, feed, error=exc))
                return
            except SyncError as exc:
                self._queue.put_nowait(_Item(generation, feed, error=exc))
                continue
            self._queue.put_nowait(_Item(generation, feed, value))

    async def _follow(self) -> bool:
        """Apply what arrives until the stop rule holds (True) or the subscriptions must be
        opened again (False). A permanent error ends the watch."""
        waiting = {feed.role for feed in self.target.feeds}  # for their first values
        while True:
            item = await self._before_deadline(self._queue.get())
            if item.feed is None:
                self._probed(item.error)
                continue
            if item.generation != self.generation:
                continue  # from subscriptions already dropped
            feed, error = item.feed, item.error
            if error is not None and isinstance(error, ConvexFunctionError) and _is_gone(feed, error):
                self.state.gone(error)
            elif error is not None:
                if feed.role in waiting and isinstance(error, PermanentError):
                    raise error  # the HTTP check passed, the subscription did not: that is the answer
                self._connection("down", f"subscription lost: {error}")
                return False
            elif not self.state.apply(feed, item.value):
                self.state.connection = "connecting"  # the page asks to be split: afresh
                return False
            waiting.discard(feed.role)
            if waiting:
                continue
            lines = self.state.changes()
            if self.state.connection != "live":  # a (new) subscription's first complete state
                if self.state.connection == "down":
                    lines.append({"type": "connection", "state": "live"})
                self.state.connection, self.state.problem = "live", None
                lines.append(self._synced_line())
            self.sink.update(self.state, lines)
            self._start_probe()
            if self._satisfied():
                return True

    def _synced_line(self) -> Line:
        return {"type": "synced", "label": self.target.label, "assets": len(self.state.assets),
                "more": self.state.more, "bound": self.target.bound,
                "subscriptions": self.generation}

    def _satisfied(self) -> bool:
        until = self.stop.until
        return until is not None and self.state.count(until[0]) >= until[1]

    # the probe ----------------------------------------------------------------------------

    def _start_probe(self) -> None:
        if self._probe is None and self.probe_every > 0:
            self._probe = asyncio.create_task(self._probing())

    async def _probing(self) -> None:
        feed = self.target.feeds[0]
        while True:
            await asyncio.sleep(self.probe_every)
            error: SyncError | None = None
            try:
                await self.live.check(feed.path, feed.args)
            except SyncError as exc:
                error = None if _is_gone(feed, exc) else exc
            self._queue.put_nowait(_Item(self.generation, None, error=error))

    def _probed(self, error: SyncError | None) -> None:
        if isinstance(error, PermanentError):
            raise error  # the server refuses now what it accepted: a token expired, a key rotated
        if error is None:
            if self.state.connection != "live":
                self._connection("live")
        else:
            self._connection("down", str(error))

    # connection state and the deadline ---------------------------------------------------

    def _retrying(self, attempt: int, delay: float, error: RetryableError) -> None:
        self._connection("down", f"{error} (trying again in {delay:.1f} s)")

    def _connection(self, state: Literal["live", "down"], problem: str | None = None) -> None:
        """A ``connection`` line when it goes down or comes back; the view follows the detail."""
        was = self.state.connection
        self.state.connection, self.state.problem = state, problem
        line: Line = {"type": "connection", "state": state}
        if problem is not None:
            line["error"] = problem
        self.sink.update(self.state, [line] if was != state else [])

    async def _before_deadline(self, awaitable: Awaitable[Any]) -> Any:
        if self._deadline is None:
            return await awaitable
        remaining = self._deadline - self.clock()
        try:
            return await asyncio.wait_for(awaitable, max(0.0, remaining))
        except TimeoutError:
            raise _Deadline from None

    def _at_deadline(self) -> None:
        until = self.stop.until
        if until is None:
            return
        status, count = until
        raise PermanentError(
            f"watch {self.target.label}: {self.state.count(status)} of {count} asset(s) "
            f"{status} after {self.stop.exit_after:g} s")
