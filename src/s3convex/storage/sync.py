"""The blocking facade for render scripts: ``s3convex.storage.sync.S3Storage``.

    from s3convex.storage.sync import S3Storage

    with S3Storage.from_env() as storage:
        storage.create_session("s1", "alice")
        result = storage.upload_dir("out/intro", "s1", "intro", 3)

The same methods as the async :class:`s3convex.storage.S3Storage`, which does the work on a
private event loop in a thread of its own, started when the storage opens and stopped when it
closes. Why a loop thread and not ``asyncio.run`` per call: the status writer flushes between
calls and holds final records until ``commit()``, and the clients and their connections are
reused — all of which outlive any one call. It works from any thread, and from code that already
runs an event loop (a notebook). Ctrl-C during a call cancels the upload (multipart uploads are
aborted) and raises KeyboardInterrupt. Subscribers are called on the storage's thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from s3convex.settings import Settings, load_settings
from s3convex.storage.results import UploadedFile, UploadResult
from s3convex.storage.storage import S3Storage as AsyncS3Storage

T = TypeVar("T")


class S3Storage:
    """Blocking :class:`s3convex.storage.S3Storage`; takes the same arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._storage = AsyncS3Storage(*args, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> S3Storage:
        return cls(settings.aws, settings.upload, convex=settings.convex, **options)

    @classmethod
    def from_env(cls, **overrides: Any) -> S3Storage:
        return cls.from_settings(load_settings(**overrides))

    @property
    def storage(self) -> AsyncS3Storage:
        """The async storage underneath (its coroutines run on :attr:`loop`)."""
        return self._storage

    def __enter__(self) -> S3Storage:
        self.open()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close(flush=exc_type is None)

    def open(self) -> None:
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="s3convex-storage", daemon=True)
        self._thread.start()
        ready.wait()
        try:
            self._call(self._storage.open())
        except BaseException:
            self._stop()
            raise

    def close(self, *, flush: bool = True) -> None:
        if self._thread is None:
            return
        try:
            self._call(self._storage.aclose(flush=flush))
        finally:
            self._stop()

    def create_session(self, session_id: str, owner: str, **options: Any) -> bool:
        return self._call(self._storage.create_session(session_id, owner, **options))

    def upload_file(self, path: Any, key: str | None = None, **options: Any) -> UploadedFile:
        return self._call(self._storage.upload_file(path, key, **options))

    def upload_dir(self, path: Any, session: str, scene: str, version: int,
                   **options: Any) -> UploadResult:
        return self._call(self._storage.upload_dir(path, session, scene, version, **options))

    def retry_failed(self, result: UploadResult, **options: Any) -> UploadResult:
        return self._call(self._storage.retry_failed(result, **options))

    def commit(self, session: str | None = None) -> None:
        self._call(self._storage.commit(session))

    @contextlib.contextmanager
    def batch(self, session: str) -> Iterator[S3Storage]:
        """As the async ``batch``: final records held in the block, written when it ends."""
        manager = self._storage.batch(session)
        self._call(manager.__aenter__())
        try:
            yield self
        except BaseException as exc:
            self._call(manager.__aexit__(type(exc), exc, exc.__traceback__))
            raise
        self._call(manager.__aexit__(None, None, None))

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        if loop is None:
            coroutine.close()
            raise RuntimeError("open the storage first: `with S3Storage.from_env() as storage`")
        outcome: concurrent.futures.Future[T] = concurrent.futures.Future()
        tasks: list[asyncio.Task[T]] = []

        def start() -> None:
            task = loop.create_task(coroutine)
            tasks.append(task)
            task.add_done_callback(finished)

        def finished(task: asyncio.Task[T]) -> None:
            if task.cancelled():
                outcome.cancel()
            elif (error := task.exception()) is not None:
                outcome.set_exception(error)
            else:
                outcome.set_result(task.result())

        loop.call_soon_threadsafe(start)
        try:
            return outcome.result()
        except KeyboardInterrupt:
            # Cancel the work and wait for it to unwind (multipart uploads are aborted).
            loop.call_soon_threadsafe(lambda: [task.cancel() for task in tasks])
            with contextlib.suppress(concurrent.futures.CancelledError,
                                     concurrent.futures.TimeoutError, Exception):
                outcome.result(timeout=30)
            raise

    def _stop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
