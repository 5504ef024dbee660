"""Helpers of the storage tests (tests/test_storage*.py): settings for a test's bucket, a scene
directory, a status sink that records what it is asked, S3 clients that fail or slow down on cue."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s3convex.core.errors import StorageUnavailable
from s3convex.settings import AwsSettings, ConvexSettings, UploadSettings, load
from s3convex.storage import ManifestRef, SessionProgress, StatusSink, StatusUpdate

MiB = 1024 * 1024
# Small enough that the scene's 12 MiB video goes in 3 parts (S3's smallest part is 5 MiB).
TEST_UPLOAD = {"S3_UPLOAD_MULTIPART_THRESHOLD": "5MiB", "S3_UPLOAD_PART_SIZE": "5MiB",
               "S3_UPLOAD_STATUS_INTERVAL_MS": "200"}
SCENE_FILES = ("video.mp4", "scene.py", "metadata.json", "thumbnail.png", "subtitles.vtt")


def make_scene(folder: Path, *, video_bytes: int = 12 * MiB) -> dict[str, bytes]:
    """A rendered scene: a video large enough for parts, its source, metadata, thumbnail, subtitles."""
    folder.mkdir(parents=True, exist_ok=True)
    contents = {
        "video.mp4": os.urandom(video_bytes),
        "scene.py": b"from manim import *\n\nclass Intro(Scene):\n    def construct(self):\n        pass\n",
        "metadata.json": b'{"title": "Intro", "duration": 12.5}\n',
        "thumbnail.png": b"\x89PNG\r\n\x1a\n" + os.urandom(4000),
        "subtitles.vtt": b"WEBVTT\n\n00:00.000 --> 00:02.000\nHello\n",
    }
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    return contents


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def settings_for(bucket: str, endpoint: str, convex_url: str | None = None,
                 convex_key: str | None = None, **overrides: str,
                 ) -> tuple[AwsSettings, UploadSettings, ConvexSettings | None]:
    values = {"S3_BUCKET": bucket, "AWS_ENDPOINT_URL": endpoint, **TEST_UPLOAD, **overrides,
              "_env_file": None}
    convex = (load(ConvexSettings, CONVEX_URL=convex_url, CONVEX_DEPLOY_KEY=convex_key,
                   _env_file=None) if convex_url else None)
    return load(AwsSettings, **values), load(UploadSettings, **values), convex


@dataclass
class Call:
    at: float
    function: str
    session_id: str = ""
    run_id: str = ""
    updates: list[dict[str, Any]] = field(default_factory=list)
    manifest: ManifestRef | None = None


class RecordingSink:
    """A StatusSink that records every call, then passes it on to ``inner`` (the real Convex
    sink) or, without one, answers as Convex would."""

    def __init__(self, inner: StatusSink | None = None) -> None:
        self.inner = inner
        self.calls: list[Call] = []
        self.fail_next: list[BaseException] = []  # raised by the next report calls, in order

    async def create_session(self, session_id: str, owner_id: str, run_id: str | None) -> bool:
        self.calls.append(Call(time.monotonic(), "createSession", session_id))
        return await self.inner.create_session(session_id, owner_id, run_id) if self.inner else True

    async def report(self, session_id: str, run_id: str,
                     updates: Sequence[StatusUpdate]) -> SessionProgress | None:
        self.calls.append(Call(time.monotonic(), "report", session_id, run_id,
                               [dict(u) for u in updates]))
        if self.fail_next:
            raise self.fail_next.pop(0)
        return await self.inner.report(session_id, run_id, updates) if self.inner else None

    async def set_manifest(self, manifest: ManifestRef) -> None:
        self.calls.append(Call(time.monotonic(), "setManifest", manifest.session_id,
                               manifest.run_id, manifest=manifest))
        if self.inner:
            await self.inner.set_manifest(manifest)

    @property
    def reports(self) -> list[Call]:
        return [call for call in self.calls if call.function == "report"]

    def updates_for(self, key: str) -> list[dict[str, Any]]:
        """Every update sent for ``key``, in the order sent."""
        return [u for call in self.reports for u in call.updates if u["key"] == key]

    def last(self, key: str) -> dict[str, Any]:
        return self.updates_for(key)[-1]


class ScriptedS3:
    """The storage's mapped S3 client with faults on cue: ``before(operation, params)`` may sleep;
    ``after(operation, params)`` may raise once the request has gone through (its bytes sent,
    its answer lost) — the case whose bytes must not count twice."""

    def __init__(self, inner: Any, *,
                 before: Callable[[str, dict[str, Any]], Any] | None = None,
                 after: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self._inner, self._before, self._after = inner, before, after
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @property
    def meta(self) -> Any:
        return self._inner.meta

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        async def call(**params: Any) -> Any:
            self.calls.append((name, {k: v for k, v in params.items() if k != "Body"}))
            if self._before is not None:
                waited = self._before(name, params)
                if asyncio.iscoroutine(waited):
                    await waited
            answer = await method(**params)
            if self._after is not None:
                self._after(name, params)
            return answer

        return call


def lost_answer(operation: str) -> StorageUnavailable:
    return StorageUnavailable("We encountered an internal error. Please try again. (injected)",
                              operation=operation, code="InternalError", status=503)


def open_s3(aws: AwsSettings, upload: UploadSettings) -> Any:
    """The mapped S3 client S3Storage itself would open (an async context manager of AwsClients)."""
    from s3convex.adapters.aws import open_clients

    return open_clients(aws, max_pool_connections=upload.concurrency + 4, signed_head=False,
                        s3_checksums=(upload.request_checksum_calculation,
                                      upload.response_checksum_validation))
