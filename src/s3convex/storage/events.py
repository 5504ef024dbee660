"""What an upload tells whoever listens: :class:`UploadSubscriber` (s3transfer's idea).

Progress is delivered to subscribers rather than threaded through the work: the status writer
(Convex records), the metrics and a command's progress bar are each one subscriber, and the
uploader knows none of them. Every method is called on the event loop's thread and must not
block; one that raises is logged and ignored, so a broken progress bar cannot fail an upload.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from s3convex.core.errors import SyncError

if TYPE_CHECKING:
    from s3convex.storage.plan import PlannedFile
    from s3convex.storage.results import FailedFile, UploadedFile

log = logging.getLogger(__name__)


class UploadSubscriber:
    """Override what you need; each default does nothing."""

    def on_queued(self, file: PlannedFile, run_id: str, attempt: int) -> None:
        """Planned and waiting (status ``pending``); ``attempt`` is the try it will be."""

    def on_started(self, file: PlannedFile, run_id: str) -> None:
        """Its first request got a slot (status ``uploading``)."""

    def on_progress(self, file: PlannedFile, run_id: str, delta: int) -> None:
        """Bytes sent since the last call; negative when a failed request's bytes are taken back."""

    def on_retry(self, file: PlannedFile, run_id: str, attempt: int, delay: float,
                 error: SyncError) -> None:
        """A request failed and try ``attempt`` starts in ``delay`` seconds."""

    def on_done(self, outcome: UploadedFile | FailedFile) -> None:
        """Finished: uploaded, or failed after its last attempt."""


class Fanout(UploadSubscriber):
    """Several subscribers as one; a subscriber that raises is logged, never propagated."""

    def __init__(self, subscribers: Iterable[UploadSubscriber]) -> None:
        self._subscribers = tuple(subscribers)

    def with_(self, more: Iterable[UploadSubscriber]) -> Fanout:
        return Fanout((*self._subscribers, *more))

    def on_queued(self, file: PlannedFile, run_id: str, attempt: int) -> None:
        for subscriber in self._subscribers:
            self._safely(subscriber.on_queued, file, run_id, attempt)

    def on_started(self, file: PlannedFile, run_id: str) -> None:
        for subscriber in self._subscribers:
            self._safely(subscriber.on_started, file, run_id)

    def on_progress(self, file: PlannedFile, run_id: str, delta: int) -> None:
        for subscriber in self._subscribers:
            self._safely(subscriber.on_progress, file, run_id, delta)

    def on_retry(self, file: PlannedFile, run_id: str, attempt: int, delay: float,
                 error: SyncError) -> None:
        for subscriber in self._subscribers:
            self._safely(subscriber.on_retry, file, run_id, attempt, delay, error)

    def on_done(self, outcome: UploadedFile | FailedFile) -> None:
        for subscriber in self._subscribers:
            self._safely(subscriber.on_done, outcome)

    @staticmethod
    def _safely(method: Callable[..., None], *args: object) -> None:
        try:
            method(*args)
        except Exception:
            log.exception("upload subscriber failed", extra={"subscriber": repr(method)})
