"""Helpers of the storage tests (tests/test_storage*.py, test_upload*.py): settings for a test's
bucket, a scene directory, a status sink that records what it is asked, S3 clients that fail or
slow down on cue; and their fixtures, ``bucket`` and ``session_id`` (a plugin of conftest.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from s3convex.core.errors import StorageUnavailable
from s3convex.settings import AwsSettings, ConvexSettings, UploadSettings, load
from s3convex.storage import ManifestRef, SessionProgress, StatusSink, StatusUpdate
from tests.backends import AwsResources

MiB = 1024 * 1024
# Small enough that the scene's 12 MiB video goes in 3 parts (S3's smallest part is 5 MiB).
TEST_UPLOAD = {"S3_UPLOAD_MULTIPART_THRESHOLD": "5MiB", "S3_UPLOAD_PART_SIZE": "5MiB",
               "S3_UPLOAD_STATUS_INTERVAL_MS": "200"}
SCENE_FILES = ("video.mp4", "scene.py", "metadata.json", "thumbnail.png", "subtitles.vtt")



@pytest.fixture
def bucket(aws_resources: AwsResources) -> str:
    """The test's own bucket, created."""
    aws_resources.client("s3").create_bucket(Bucket=aws_resources.bucket)
    return aws_resources.bucket


@pytest.fixture
def session_id() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"

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
    manifest: ManifestRef | None = None  # setManifest's
    manifests: list[ManifestRef] = field(default_factory=list)  # a report's


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

    async def report(self, session_id: str, run_id: str, updates: Sequence[StatusUpdate],
                     manifests: Sequence[ManifestRef] = ()) -> SessionProgress | None:
        self.calls.append(Call(time.monotonic(), "report", session_id, run_id,
                               [dict(u) for u in updates], manifests=list(manifests)))
        if self.fail_next:
            raise self.fail_next.pop(0)
        return (await self.inner.report(session_id, run_id, updates, manifests)
                if self.inner else None)

    @property
    def manifest_refs(self) -> list[tuple[int, ManifestRef]]:
        """Every manifest reference sent (a report's or setManifest's), with its call's index."""
        return [(i, ref) for i, call in enumerate(self.calls)
                for ref in (call.manifests or ([call.manifest] if call.manifest else []))]

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


# --- S3 faults below botocore ----------------------------------------------------------------

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b'<Message>Please reduce your request rate. (injected)</Message>'
             b'<RequestId>fault-proxy</RequestId></Error>')
_HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection",
                          "keep-alive", "expect"})


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    status: int


class FaultProxy:
    """A loopback HTTP proxy in front of S3 (moto, LocalStack) that answers ``503 SlowDown``, as
    S3 does when throttling, to every request ``fault(method, path, query)`` picks — after
    reading its body, so the client sees S3's answer and nothing else. Everything else is
    forwarded as it came, after ``delay(...)`` seconds if given. ``seen`` lists every request
    with the status answered."""

    def __init__(self, target: str, fault: Callable[[str, str, dict[str, str]], bool], *,
                 delay: Callable[[str, str, dict[str, str]], float] | None = None) -> None:
        self.target = target.rstrip("/")
        self.fault = fault
        self.delay = delay  # seconds to hold a request before it is answered (a slow uplink)
        self.seen: list[Seen] = []
        self.url = ""
        self._runner: Any = None
        self._client: Any = None

    async def __aenter__(self) -> FaultProxy:
        import aiohttp
        from aiohttp import web

        self._client = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * MiB)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()
        await self._client.close()

    def count(self, status: int, path_end: str = "") -> int:
        return sum(1 for s in self.seen if s.status == status and s.path.endswith(path_end))

    async def _handle(self, request: Any) -> Any:
        import yarl
        from aiohttp import web

        body = await request.read()
        query = dict(request.query)
        if self.delay is not None and (pause := self.delay(request.method, request.path, query)):
            await asyncio.sleep(pause)
        if self.fault(request.method, request.path, query):
            self.seen.append(Seen(request.method, request.path, query, 503))
            return web.Response(status=503, body=SLOW_DOWN, content_type="application/xml")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._client.request(request.method,
                                        yarl.URL(self.target + request.raw_path, encoded=True),
                                        headers=headers, data=body) as answer:
            data = await answer.read()
            back = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS}
            self.seen.append(Seen(request.method, request.path, query, answer.status))
            return web.Response(status=answer.status, body=data, headers=back)


# --- a render worker in its own process (python -m tests.storage_support) ---------------------

def _worker(argv: Sequence[str]) -> int:
    """``upload DIR SESSION SCENE VERSION [--owner O] [--wait-go] [--hold]`` through the public
    API, configured from the environment; one JSON line per step on stdout. ``--wait-go`` waits
    for a line on stdin before uploading (two workers start together); ``--hold`` never closes
    the storage after the upload (the test kills the process)."""
    import argparse
    import json
    import sys

    from s3convex import S3Storage

    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["upload"])
    parser.add_argument("directory")
    parser.add_argument("session")
    parser.add_argument("scene")
    parser.add_argument("version", type=int)
    parser.add_argument("--owner")
    parser.add_argument("--wait-go", action="store_true")
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args(argv)

    def say(event: str, **fields: Any) -> None:
        print(json.dumps({"event": event, **fields}), flush=True)

    async def run() -> None:
        async with S3Storage.from_env() as store:
            say("open")
            if args.wait_go:
                await asyncio.to_thread(sys.stdin.readline)
            if args.owner:
                await store.create_session(args.session, args.owner)
            result = await store.upload_dir(args.directory, args.session, args.scene,
                                            args.version)
            spool = store.spool
            say("uploaded", result=result.to_dict(),
                spooled=spool.spooled if spool else 0,
                pending=await spool.pending() if spool else 0)
            if args.hold:
                await asyncio.to_thread(sys.stdin.readline)  # until killed
        say("closed")

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(_worker(sys.argv[1:]))
