"""The cleanup worker (consumer/cleanup.py) against a real S3 emulator and the local Convex server.

Deleting a session of 3 scenes × 3 versions: hidden at once, S3 untouched until the grace
passes, then gone, records tombstoned with their reason and history intact; restore within the
grace. Injected S3 failures: per-key ``AccessDenied`` from an object-lock legal hold (a bucket
policy is not enforced by moto or LocalStack without IAM enforcement, so the refusal comes from
S3's own object-lock rule, on real versions) and a 503 for the whole call — retried with the
backoff stored on the record, then ``cleanup_failed``; a worker that dies between S3 and Convex;
and nothing outside the session's prefix ever touched.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp import web

from s3convex.adapters.aws import MappedClient, open_clients
from s3convex.adapters.convex import ConvexClient
from s3convex.consumer.cleanup import CleanupWorker, in_session_prefix
from s3convex.core.layout import KeyLayout
from s3convex.settings import AwsSettings, CleanupSettings, load
from tests.backends import AwsResources

LAYOUT = KeyLayout.default()


def settings(**overrides: Any) -> CleanupSettings:
    return load(CleanupSettings, _env_file=None, **overrides)


class Seeded:
    """A session of 3 scenes × 3 versions × (video, manifest) in S3 and Convex, plus neighbours
    that must never be touched: another session whose id starts the same, and a loose key."""

    def __init__(self, resources: AwsResources, convex: ConvexClient, *, locked: bool = False) -> None:
        self.resources = resources
        self.convex = convex
        self.s3 = resources.client("s3")
        self.bucket = resources.bucket
        self.session = f"s-{uuid.uuid4().hex[:8]}"
        self.locked = locked
        self.keys = [f"sessions/{self.session}/scenes/{scene}/v{version}/{file}"
                     for scene in ("a", "b", "c") for version in (1, 2, 3)
                     for file in ("video.mp4", "manifest.json")]
        self.neighbours = [f"sessions/{self.session}x/scenes/a/v1/video.mp4", "loose/file.bin"]
        self.versions: dict[str, str] = {}

    async def create(self) -> Seeded:
        self.s3.create_bucket(Bucket=self.bucket, **({"ObjectLockEnabledForBucket": True}
                                                     if self.locked else {}))
        events = []
        for key in [*self.keys, *self.neighbours]:
            answer = self.s3.put_object(Bucket=self.bucket, Key=key, Body=key.encode())
            if answer.get("VersionId"):
                self.versions[key] = answer["VersionId"]
            info = LAYOUT.classify(key)
            events.append({"type": "created", "bucket": self.bucket, "key": key,
                           "eventName": "ObjectCreated:Put", "eventTime": int(time.time() * 1000),
                           "size": len(key), "etag": answer["ETag"].strip('"'),
                           **({"versionId": answer["VersionId"]} if answer.get("VersionId") else {}),
                           **{k: v for k, v in info.asset_fields().items() if v is not None}})
        results = await self.convex.mutation("assets:applyEvents", {"events": events})
        assert all(r["status"] == "applied" for r in results)
        return self

    async def delete(self, grace: int, reason: str = "user asked") -> dict[str, Any]:
        return await self.convex.mutation("lifecycle:deleteSession", {
            "sessionId": self.session, "actor": "ops@test", "reason": reason, "graceSeconds": grace})

    def in_s3(self) -> set[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return {item["Key"] for item in listed}

    async def record(self, key: str) -> dict[str, Any]:
        return await self.convex.query("assets:getByKey", {"bucket": self.bucket, "key": key})

    async def history(self, key: str) -> list[dict[str, Any]]:
        return await self.convex.query("assets:history", {"bucket": self.bucket, "key": key})


@pytest.fixture
async def opened(aws_resources: AwsResources) -> AsyncIterator[Any]:
    async with open_clients(load(AwsSettings), max_pool_connections=8) as clients:
        yield clients


def worker(convex: ConvexClient, s3: Any, bucket: str, **overrides: Any) -> CleanupWorker:
    return CleanupWorker(convex, s3, bucket=bucket, layout=LAYOUT,
                         settings=settings(**overrides), operator="test")


async def test_a_deleted_session_is_removed_after_the_grace(aws_resources, convex, opened) -> None:
    seeded = await Seeded(aws_resources, convex).create()
    progress = await seeded.delete(grace=2)
    assert progress["state"] == "pending" and progress["marked"] == len(seeded.keys)
    assert {(await seeded.record(k))["status"] for k in seeded.keys} == {"cleanup_pending"}

    cleaner = worker(convex, opened.s3, seeded.bucket)
    early = await cleaner.run_once()
    assert early.deleted == 0
    assert seeded.in_s3() == {*seeded.keys, *seeded.neighbours}  # untouched during the grace

    await asyncio.sleep(2.2)
    report = await cleaner.run_once()
    assert (report.deleted, report.failed, report.skipped) == (len(seeded.keys), 0, 0)
    assert report.bytes_deleted == sum(len(k) for k in seeded.keys)
    assert seeded.in_s3() == set(seeded.neighbours)
    for key in seeded.keys:
        record = await seeded.record(key)
        assert record["status"] == "deleted" and record["deleteReason"] == "user asked"
        assert record["deletedBy"] == "ops@test" and record["deletedAt"] > 0
        assert [row["eventName"] for row in await seeded.history(key)] == [
            "s3convex:Cleanup", "ObjectCreated:Put"]
    for key in seeded.neighbours:
        assert (await seeded.record(key))["status"] == "available"
    done = await convex.query("lifecycle:progress", {"sessionId": seeded.session})
    assert done["state"] == "deleted" and done["deleted"] == len(seeded.keys)
    runs = await convex.query("lifecycle:runs", {"limit": 5})
    audited = next(r for r in runs if r["runId"] == report.run_id)
    assert audited["status"] == "completed" and audited["deleted"] == len(seeded.keys)
    assert audited["operator"] == "test"


async def test_restore_within_the_grace_brings_everything_back(aws_resources, convex, opened) -> None:
    seeded = await Seeded(aws_resources, convex).create()
    await seeded.delete(grace=3600)
    restored = await convex.mutation("lifecycle:restoreSession", {"sessionId": seeded.session})
    assert restored["state"] == "restored" and restored["restored"] == len(seeded.keys)
    assert {(await seeded.record(k))["status"] for k in seeded.keys} == {"available"}
    assert (await worker(convex, opened.s3, seeded.bucket).run_once()).deleted == 0
    assert seeded.in_s3() == {*seeded.keys, *seeded.neighbours}


async def test_per_key_refusals_back_off_then_give_up(aws_resources, convex, opened) -> None:
    seeded = await Seeded(aws_resources, convex, locked=True).create()
    held = seeded.keys[:2]
    for key in held:
        seeded.s3.put_object_legal_hold(Bucket=seeded.bucket, Key=key, VersionId=seeded.versions[key],
                                        LegalHold={"Status": "ON"})
    await seeded.delete(grace=0)
    cleaner = worker(convex, opened.s3, seeded.bucket, CLEANUP_MAX_ATTEMPTS=3,
                     CLEANUP_BACKOFF_BASE=0.4, CLEANUP_BACKOFF_MAX=0.8)
    first = await cleaner.run_once()
    assert (first.deleted, first.failed, first.gave_up) == (len(seeded.keys) - 2, 2, 0)
    assert {e["key"]: e["code"] for e in first.errors} == dict.fromkeys(held, "AccessDenied")
    now_ms = time.time() * 1000
    for key in held:
        cleanup = (await seeded.record(key))["cleanup"]
        assert cleanup["attempts"] == 1 and cleanup["lastError"].startswith("AccessDenied")
        assert 150 <= cleanup["nextAttemptAt"] - now_ms <= 450  # jittered 200-400 ms
    # Versioned bucket: the version each record knew is gone for good, no delete marker left.
    left = seeded.s3.list_object_versions(Bucket=seeded.bucket)
    assert {v["Key"] for v in left.get("Versions", [])} == {*held, *seeded.neighbours}
    assert left.get("DeleteMarkers", []) == []

    assert (await cleaner.run_once()).failed == 0  # backing off: not due yet
    await asyncio.sleep(0.5)
    assert (await cleaner.run_once()).failed == 2
    await asyncio.sleep(0.9)
    last = await cleaner.run_once()
    assert (last.failed, last.gave_up) == (2, 2)
    for key in held:
        record = await seeded.record(key)
        assert record["status"] == "cleanup_failed" and record["cleanup"]["attempts"] == 3
    backlog = await convex.query("lifecycle:backlog", {"bucket": seeded.bucket})
    assert backlog["failed"] == 2 and backlog["pending"] == 0

    # The hold is lifted; an operator retries.
    for key in held:
        seeded.s3.put_object_legal_hold(Bucket=seeded.bucket, Key=key, VersionId=seeded.versions[key],
                                        LegalHold={"Status": "OFF"})
    assert await convex.mutation("lifecycle:retryFailed", {"sessionId": seeded.session, "limit": 10}) == 2
    assert (await cleaner.run_once()).deleted == 2
    assert seeded.in_s3() == set(seeded.neighbours)


@pytest.fixture
async def unavailable_s3() -> AsyncIterator[Any]:
    """An S3 endpoint that answers every request 503 SlowDown, and a client without retries."""
    async def slow_down(_: web.Request) -> web.Response:
        return web.Response(status=503, content_type="application/xml",
                            text="<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow_down)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = AioConfig(retries={"mode": "standard", "max_attempts": 1}, s3={"addressing_style": "path"})
    async with get_session().create_client("s3", endpoint_url=f"http://127.0.0.1:{port}",
                                           region_name="us-east-1", config=config) as s3:
        yield MappedClient(s3)
    await runner.cleanup()


async def test_a_503_keeps_every_key_pending(aws_resources, convex, unavailable_s3) -> None:
    seeded = await Seeded(aws_resources, convex).create()
    await seeded.delete(grace=0)
    report = await worker(convex, unavailable_s3, seeded.bucket).run_once()
    assert (report.deleted, report.failed) == (0, len(seeded.keys))
    record = await seeded.record(seeded.keys[0])
    assert record["status"] == "cleanup_pending" and record["cleanup"]["attempts"] == 1
    assert record["cleanup"]["lastError"].startswith("SlowDown")
    assert seeded.in_s3() == {*seeded.keys, *seeded.neighbours}


class Killed(Exception):
    pass


class DiesOnSecondMark:
    """A Convex client whose second ``markDeleted`` never arrives: the worker dies between S3
    and Convex, as a killed process would."""

    def __init__(self, convex: ConvexClient) -> None:
        self._convex = convex
        self.marks = 0

    async def query(self, *args: Any, **kwargs: Any) -> Any:
        return await self._convex.query(*args, **kwargs)

    async def mutation(self, path: str, args: Any = None, **kwargs: Any) -> Any:
        if path == "lifecycle:markDeleted":
            self.marks += 1
            if self.marks == 2:
                raise Killed("between DeleteObjects and markDeleted")
        return await self._convex.mutation(path, args, **kwargs)


async def test_a_worker_killed_mid_run_is_finished_by_the_next(aws_resources, convex, opened) -> None:
    seeded = await Seeded(aws_resources, convex).create()
    await seeded.delete(grace=0)
    dying = CleanupWorker(DiesOnSecondMark(convex), opened.s3, bucket=seeded.bucket,  # type: ignore[arg-type]
                          layout=LAYOUT, settings=settings(CLEANUP_BATCH=5, CLEANUP_CONCURRENCY=1))
    with pytest.raises(Killed):
        await dying.run_once()
    # The second batch is out of S3 but still pending in Convex.
    pending = [k for k in seeded.keys if (await seeded.record(k))["status"] == "cleanup_pending"]
    assert len(pending) == len(seeded.keys) - 5 and len(seeded.in_s3()) < len(seeded.keys) - 5 + 2

    report = await worker(convex, opened.s3, seeded.bucket, CLEANUP_BATCH=5).run_once()
    assert report.deleted == len(seeded.keys) - 5 and report.failed == 0
    assert seeded.in_s3() == set(seeded.neighbours)
    for key in seeded.keys:
        removals = [r for r in await seeded.history(key) if r["type"] == "removed"]
        assert len(removals) == 1
    runs = await convex.query("lifecycle:runs", {"limit": 10})
    assert any(r["status"] == "failed" and r["deleted"] == 5 for r in runs)


class Recorded:
    """The Convex client and the S3 client, recording when each call starts (the pipeline)."""

    def __init__(self, convex: ConvexClient, s3: Any) -> None:
        self._convex, self._s3 = convex, s3
        self.calls: list[tuple[str, Any]] = []

    async def query(self, path: str, args: Any = None, **kwargs: Any) -> Any:
        if path == "lifecycle:due":
            self.calls.append(("due", (args["limit"], args.get("cursor"))))
        return await self._convex.query(path, args, **kwargs)

    async def mutation(self, path: str, args: Any = None, **kwargs: Any) -> Any:
        if path == "lifecycle:markDeleted":
            self.calls.append(("mark", len(args["assets"])))
        return await self._convex.mutation(path, args, **kwargs)

    async def delete_objects(self, **kwargs: Any) -> Any:
        self.calls.append(("delete", len(kwargs["Delete"]["Objects"])))
        await asyncio.sleep(0.2)  # a slow S3: Convex's answers come first
        return await self._s3.delete_objects(**kwargs)


async def test_the_next_page_is_asked_for_before_the_batch_runs(aws_resources, convex, opened) -> None:
    seeded = await Seeded(aws_resources, convex).create()
    await seeded.delete(grace=0)
    recorded = Recorded(convex, opened.s3)
    pass_ = CleanupWorker(recorded, recorded, bucket=seeded.bucket, layout=LAYOUT,  # type: ignore[arg-type]
                          settings=settings(CLEANUP_BATCH=5, CLEANUP_CONCURRENCY=1), operator="test")
    report = await pass_.run_once(limit=12)
    assert report.deleted == 12
    # One batch at a time, yet page 3 is asked for while batch 1 is still in S3 (the next page
    # goes out as soon as one arrives, not when a slot frees); the limit sizes the last page;
    # every page comes from a new cursor (none is read twice).
    kinds = [kind for kind, _ in recorded.calls]
    assert kinds[:3] == ["due", "due", "delete"]
    assert [i for i, kind in enumerate(kinds) if kind == "due"][2] < kinds.index("mark")
    dues = [detail for kind, detail in recorded.calls if kind == "due"]
    assert [limit for limit, _ in dues] == [5, 5, 2]
    assert len({cursor for _, cursor in dues}) == 3
    assert sorted(d for kind, d in recorded.calls if kind == "mark") == [2, 5, 5]
    assert len(seeded.in_s3()) == len(seeded.keys) + len(seeded.neighbours) - 12


async def test_nothing_outside_the_session_prefix_is_deleted(aws_resources, convex, opened) -> None:
    seeded = await Seeded(aws_resources, convex).create()
    # A record that claims the session but whose key lies elsewhere (a mislabelled record).
    stray = "elsewhere/x.mp4"
    seeded.s3.put_object(Bucket=seeded.bucket, Key=stray, Body=b"x")
    await convex.mutation("assets:applyEvents", {"events": [{
        "type": "created", "bucket": seeded.bucket, "key": stray, "eventName": "ObjectCreated:Put",
        "eventTime": int(time.time() * 1000), "size": 1, "sessionId": seeded.session}]})
    await seeded.delete(grace=0)
    report = await worker(convex, opened.s3, seeded.bucket, CLEANUP_MAX_ATTEMPTS=1).run_once()
    assert report.deleted == len(seeded.keys) and report.skipped == 1 and report.gave_up == 1
    assert seeded.in_s3() == {*seeded.neighbours, stray}
    assert (await seeded.record(stray))["cleanup"]["lastError"] == "outside_prefix"


def test_the_workers_prefix_guard() -> None:
    assert in_session_prefix("sessions/s1/scenes/a/v1/video.mp4", "s1", LAYOUT)
    assert in_session_prefix("sessions/s1/notes.json", "s1", LAYOUT)
    assert not in_session_prefix("sessions/s1x/scenes/a/v1/video.mp4", "s1", LAYOUT)
    assert not in_session_prefix("other/s1/video.mp4", "s1", LAYOUT)
    assert not in_session_prefix("sessions/s1/scenes/a/v1/video.mp4", None, LAYOUT)
    assert not in_session_prefix("s1", "s1", LAYOUT)
