"""S3Storage against real servers: moto (or LocalStack) for S3, the local Convex server running
this project's convex/uploads.ts for the status. A RecordingSink between the storage and Convex
counts the mutations and keeps every update sent, so rate and order are checked on what Convex
was really asked; the records are then read back from Convex itself."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from s3convex.adapters.convex import ConvexClient
from s3convex.storage import (
    ConvexStatusSink,
    FailedFile,
    KeyOutsideLayout,
    PlannedFile,
    S3Storage,
    UploadedFile,
    UploadRefused,
    UploadSubscriber,
)
from s3convex.storage.sync import S3Storage as SyncS3Storage
from tests.backends import AwsResources
from tests.storage_support import (
    SCENE_FILES,
    MiB,
    RecordingSink,
    ScriptedS3,
    lost_answer,
    make_scene,
    open_s3,
    settings_for,
    sha256_hex,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sink(convex: ConvexClient) -> RecordingSink:
    return RecordingSink(ConvexStatusSink(convex))


def storage(aws_resources: AwsResources, sink: RecordingSink, **options: Any) -> S3Storage:
    overrides = {k: v for k, v in options.items() if k.isupper()}
    rest = {k: v for k, v in options.items() if not k.isupper()}
    aws, upload, _ = settings_for(aws_resources.bucket, aws_resources.endpoint_url, **overrides)
    return S3Storage(aws, upload, sink=sink, **rest)


async def record(convex: ConvexClient, bucket: str, key: str) -> dict[str, Any]:
    found = await convex.query("assets:getByKey", {"bucket": bucket, "key": key})
    assert found is not None, key
    return found


class Recorder(UploadSubscriber):
    """Every event, in order; ``on_queued_hook`` runs after the plan's checks (to break a file)."""

    def __init__(self, on_queued_hook: Any = None) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self._hook = on_queued_hook

    def on_queued(self, file: PlannedFile, run_id: str, attempt: int) -> None:
        self.events.append(("queued", file.name, attempt))
        if self._hook is not None:
            self._hook(file)

    def on_progress(self, file: PlannedFile, run_id: str, delta: int) -> None:
        self.events.append(("progress", file.name, delta))

    def on_retry(self, file: PlannedFile, run_id: str, attempt: int, delay: float,
                 error: Any) -> None:
        self.events.append(("retry", file.name, attempt))

    def on_done(self, outcome: UploadedFile | FailedFile) -> None:
        self.events.append(("done", outcome.file.name, type(outcome).__name__))

    def sent(self, name: str) -> list[int]:
        """The running total of bytes counted for ``name`` after each progress event."""
        total, totals = 0, []
        for kind, file, value in self.events:
            if kind == "progress" and file == name:
                total += value
                totals.append(total)
        return totals


# --- a whole scene -----------------------------------------------------------------------------

async def test_a_scene_goes_to_s3_with_checksums_and_run_id_and_is_available_in_convex(
        aws_resources: AwsResources, bucket: str, sink: RecordingSink, convex: ConvexClient,
        session_id: str, tmp_path: Path) -> None:
    contents = make_scene(tmp_path / "intro")
    recorder = Recorder()
    async with storage(aws_resources, sink, subscribers=[recorder]) as store:
        assert await store.create_session(session_id, "alice") is True
        assert await store.create_session(session_id, "alice") is False
        result = await store.upload_dir(tmp_path / "intro", session_id, "intro", 3)
    assert result.ok and not result.failed and result.status_errors == ()
    assert sorted(u.file.name for u in result.uploaded) == sorted(SCENE_FILES)
    s3 = aws_resources.client("s3")
    prefix = f"sessions/{session_id}/scenes/intro/v3/"
    by_name = {u.file.name: u for u in result.uploaded}

    for name, data in contents.items():
        key = prefix + name
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
        assert head["Metadata"]["s3convex-run-id"] == result.run_id
        uploaded = by_name[name]
        assert uploaded.sha256_hex == sha256_hex(data)
        if uploaded.parts == 1:
            assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
        found = await record(convex, bucket, key)
        assert found["status"] == "available", found
        assert (found["sessionId"], found["sceneId"], found["version"]) == (session_id, "intro", 3)
        assert found["upload"]["runId"] == result.run_id
        assert found["contentType"] == head["ContentType"]
        assert found["checksums"]["sha256"] == uploaded.s3_checksum
    video = by_name["video.mp4"]
    assert (video.parts, video.part_size, video.checksum_type) == (3, 5 * MiB, "COMPOSITE")
    digests = [hashlib.sha256(contents["video.mp4"][i:i + 5 * MiB]).digest()
               for i in range(0, 12 * MiB, 5 * MiB)]
    assert video.s3_checksum == base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode() + "-3"
    types = {name: s3.head_object(Bucket=bucket, Key=prefix + name)["ContentType"]
             for name in contents}
    assert types == {"video.mp4": "video/mp4", "scene.py": "text/x-python",
                     "metadata.json": "application/json", "thumbnail.png": "image/png",
                     "subtitles.vtt": "text/vtt"}

    # The manifest: written last, listing every file with its checksums, referenced in Convex.
    assert result.manifest is not None and result.manifest.key == prefix + "manifest.json"
    done = [name for kind, name, _ in recorder.events if kind == "done"]
    assert done[-1] == "manifest.json" and sorted(done[:-1]) == sorted(SCENE_FILES)
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read())
    assert manifest["runId"] == result.run_id and manifest["version"] == 3
    assert {f["name"]: (f["size"], f["sha256"]) for f in manifest["files"]} == {
        name: (len(data), sha256_hex(data)) for name, data in contents.items()}
    assert next(f for f in manifest["files"] if f["name"] == "video.mp4")["s3Checksum"] == {
        "algorithm": "SHA256", "type": "COMPOSITE", "value": video.s3_checksum}
    manifest_record = await record(convex, bucket, prefix + "manifest.json")
    assert (manifest_record["status"], manifest_record["kind"]) == ("available", "manifest")
    scene = await convex.query("sessions:scene", {"sessionId": session_id, "sceneId": "intro"})
    assert scene["uploads"] == [{"version": 3, "runId": result.run_id, "updatedAt": pytest.approx(
        scene["uploads"][0]["updatedAt"]), "manifest": {"bucket": bucket,
                                                       "key": prefix + "manifest.json"}}]
    # The reference rides in the report that carries the manifest's own final, after it.
    assert not [c for c in sink.calls if c.function == "setManifest"]
    (at, ref), = sink.manifest_refs
    assert ref.key == prefix + "manifest.json" and ref.run_id == result.run_id
    assert [u["status"] for u in sink.calls[at].updates if u["key"] == ref.key] == ["available"]
    assert all(c.run_id == result.run_id for c in sink.reports)
    progress = store.status.sessions[session_id]
    assert (progress.files_done, progress.failed) == (6, 0)
    assert progress.bytes_done == progress.bytes_total == sum(map(len, contents.values())) + (
        result.manifest.size)


async def test_progress_is_monotonic_and_the_mutation_rate_is_bounded(
        aws_resources: AwsResources, bucket: str, sink: RecordingSink, session_id: str,
        tmp_path: Path) -> None:
    make_scene(tmp_path / "scene", video_bytes=30 * MiB)

    async def slowly(operation: str, params: dict[str, Any]) -> None:
        if operation in ("upload_part", "put_object"):
            await asyncio.sleep(0.15)  # a slow uplink: the upload lasts several intervals

    aws, upload, _ = settings_for(bucket, aws_resources.endpoint_url, S3_UPLOAD_CONCURRENCY="2")
    recorder = Recorder()
    async with open_s3(aws, upload) as clients:
        s3 = ScriptedS3(clients.s3, before=slowly)
        async with S3Storage(aws, upload, sink=sink, s3=s3, subscribers=[recorder]) as store:
            started = time.monotonic()
            result = await store.upload_dir(tmp_path / "scene", session_id, "scene", 1)
            elapsed = time.monotonic() - started
    assert result.ok
    assert elapsed > 0.8
    reports = sink.reports
    gaps = [b.at - a.at for a, b in itertools.pairwise(reports)]
    # S3_UPLOAD_STATUS_INTERVAL_MS=200 between reports; only the last one of the upload_dir
    # (its result) goes out without waiting for the gate.
    assert min(gaps[:-1]) >= 0.2 - 0.02, gaps
    assert len(reports) <= elapsed / 0.2 + 3
    video_key = f"sessions/{session_id}/scenes/scene/v1/video.mp4"
    sent = [u["bytesSent"] for u in sink.updates_for(video_key)]
    assert sent == sorted(sent) and sent[-1] == 30 * MiB
    assert len(set(sent)) >= 4, sent  # coalesced, yet progress shows as it goes
    totals = recorder.sent("video.mp4")
    assert totals == sorted(totals) and totals[-1] == 30 * MiB
    assert max(len(r.updates) for r in reports) <= len(SCENE_FILES) + 1


# --- S3_UPLOAD_ON_WRITE, commit, batch -----------------------------------------------------------

async def test_with_on_write_false_nothing_is_available_before_commit(
        aws_resources: AwsResources, bucket: str, sink: RecordingSink, convex: ConvexClient,
        session_id: str, tmp_path: Path) -> None:
    make_scene(tmp_path / "scene")
    prefix = f"sessions/{session_id}/scenes/scene/v2/"
    async with storage(aws_resources, sink, S3_UPLOAD_ON_WRITE="false") as store:
        result = await store.upload_dir(tmp_path / "scene", session_id, "scene", 2)
        assert result.ok
        await store.status.flush()
        for name in (*SCENE_FILES, "manifest.json"):
            found = await record(convex, bucket, prefix + name)
            assert found["status"] == "uploading", (name, found["status"])
        scene = await convex.query("sessions:scene", {"sessionId": session_id, "sceneId": "scene"})
        assert scene is None or not scene.get("uploads")
        await store.commit()
        for name in (*SCENE_FILES, "manifest.json"):
            assert (await record(convex, bucket, prefix + name))["status"] == "available"
        scene = await convex.query("sessions:scene", {"sessionId": session_id, "sceneId": "scene"})
        assert scene["uploads"][0]["runId"] == result.run_id
    finals = [c for c in sink.reports if any(u["status"] == "available" for u in c.updates)]
    assert len(finals) == 1 and len(finals[0].updates) == len(SCENE_FILES) + 1  # one batch


async def test_a_batch_holds_the_final_records_until_it_ends(
        aws_resources: AwsResources, bucket: str, sink: RecordingSink, convex: ConvexClient,
        session_id: str, tmp_path: Path) -> None:
    make_scene(tmp_path / "one", video_bytes=1 * MiB)
    key = f"sessions/{session_id}/scenes/one/v1/video.mp4"
    async with storage(aws_resources, sink) as store:  # S3_UPLOAD_ON_WRITE=true
        async with store.batch(session_id):
            await store.upload_dir(tmp_path / "one", session_id, "one", 1)
            await store.upload_file(tmp_path / "one" / "scene.py", session=session_id,
                                    scene="one", version=1, name="extra.py")
            await store.status.flush()
            assert (await record(convex, bucket, key))["status"] == "uploading"
        assert (await record(convex, bucket, key))["status"] == "available"
        extra = await record(convex, bucket, f"sessions/{session_id}/scenes/one/v1/extra.py")
        assert (extra["status"], extra["kind"]) == ("available", "source")


# --- failures and retries ------------------------------------------------------------------------

async def test_a_file_that_fails_for_good_is_failed_with_its_reason_and_retry_failed_completes_it(
        aws_resources: AwsResources, bucket: str, sink: RecordingSink, convex: ConvexClient,
        session_id: str, tmp_path: Path) -> None:
    folder = tmp_path / "scene"
    contents = make_scene(folder)
    thumbnail = folder / "thumbnail.png"

    def vanish(file: PlannedFile) -> None:  # after the checks, before its first upload
        if file.name == "thumbnail.png" and not vanished:
            vanished.append(file.name)
            thumbnail.unlink()

    vanished: list[str] = []

    prefix = f"sessions/{session_id}/scenes/scene/v1/"
    async with storage(aws_resources, sink, subscribers=[Recorder(vanish)]) as store:
        result = await store.upload_dir(folder, session_id, "scene", 1)
        assert not result.ok and result.manifest is None
        (failed,) = result.failed
        assert (failed.file.name, failed.error_type, failed.retryable) == (
            "thumbnail.png", "FileUnreadable", False)
        assert "No such file or directory" in failed.error
        assert sorted(u.file.name for u in result.uploaded) == sorted(set(SCENE_FILES) - {
            "thumbnail.png"})
        broken = await record(convex, bucket, prefix + "thumbnail.png")
        assert broken["status"] == "failed" and "No such file" in broken["error"]
        for name in set(SCENE_FILES) - {"thumbnail.png"}:
            assert (await record(convex, bucket, prefix + name))["status"] == "available"
        assert "Contents" not in aws_resources.client("s3").list_objects_v2(
            Bucket=bucket, Prefix=prefix + "manifest")

        thumbnail.write_bytes(contents["thumbnail.png"])
        retried = await store.retry_failed(result)
    assert retried.ok and retried.run_id == result.run_id and not retried.failed
    assert len(retried.uploaded) == len(SCENE_FILES)
    again = next(u for u in retried.uploaded if u.file.name == "thumbnail.png")
    assert again.attempt == 2
    fixed = await record(convex, bucket, prefix + "thumbnail.png")
    assert (fixed["status"], fixed["upload"]["attempt"]) == ("available", 2)
    manifest = json.loads(aws_resources.client("s3").get_object(
        Bucket=bucket, Key=prefix + "manifest.json")["Body"].read())
    assert sorted(f["name"] for f in manifest["files"]) == sorted(SCENE_FILES)
    retry_calls = [u for u in sink.updates_for(prefix + "video.mp4")]
    assert all(u["attempt"] == 1 for u in retry_calls)  # retry_failed sent only what failed


async def test_a_part_whose_answer_is_lost_is_retried_and_its_bytes_are_not_counted_twice(
        aws_resources: AwsResources, bucket: str, sink: RecordingSink, convex: ConvexClient,
        session_id: str, tmp_path: Path) -> None:
    make_scene(tmp_path / "scene")
    lost: list[int] = []

    def lose_part_two_once(operation: str, params: dict[str, Any]) -> None:
        if operation == "upload_part" and params["PartNumber"] == 2 and not lost:
            lost.append(2)
            raise lost_answer(f"UploadPart {params['Key']}")

    aws, upload, _ = settings_for(bucket, aws_resources.endpoint_url)
    recorder = Recorder()
    async with open_s3(aws, upload) as clients:
        s3 = ScriptedS3(clients.s3, after=lose_part_two_once)
        async with S3Storage(aws, upload, sink=sink, s3=s3, subscribers=[recorder]) as store:
            result = await store.upload_dir(tmp_path / "scene", session_id, "scene", 1)
    assert result.ok and lost == [2]
    video = next(u for u in result.uploaded if u.file.name == "video.mp4")
    assert video.attempt == 2
    totals = recorder.sent("video.mp4")
    assert max(totals) <= 12 * MiB and totals[-1] == 12 * MiB  # the lost part's bytes taken back
    assert ("retry", "video.mp4", 2) in recorder.events
    key = f"sessions/{session_id}/scenes/scene/v1/video.mp4"
    failure = next(u for u in sink.updates_for(key) if u["status"] == "failed")
    assert failure["attempt"] == 1 and failure["nextRetryAt"] > time.time() * 1000 - 5000
    assert "InternalError (HTTP 503)" in failure["error"]
    assert sink.last(key)["status"] == "available" and sink.last(key)["attempt"] == 2
    found = await record(convex, bucket, key)
    assert (found["status"], found["upload"]["attempt"]) == ("available", 2)
    uploaded = [name for name, params in s3.calls if name == "upload_part"]
    assert len(uploaded) == 4  # 3 parts, one of them twice


async def test_a_part_that_keeps_failing_fails_the_file_and_aborts_its_upload(
        aws_resources: AwsResources, bucket: str, sink: RecordingSink, convex: ConvexClient,
        session_id: str, tmp_path: Path) -> None:
    make_scene(tmp_path / "scene")

    def always(operation: str, params: dict[str, Any]) -> None:
        if operation == "upload_part" and params["PartNumber"] == 3:
            raise lost_answer(f"UploadPart {params['Key']}")

    aws, upload, _ = settings_for(bucket, aws_resources.endpoint_url, S3_UPLOAD_ATTEMPTS="2")
    async with open_s3(aws, upload) as clients:
        s3 = ScriptedS3(clients.s3, after=always)
        async with S3Storage(aws, upload, sink=sink, s3=s3) as store:
            result = await store.upload_dir(tmp_path / "scene", session_id, "scene", 1)
    (failed,) = result.failed
    assert (failed.file.name, failed.retryable, failed.attempt) == ("video.mp4", True, 2)
    assert "InternalError (HTTP 503)" in failed.error
    assert result.manifest is None and len(result.uploaded) == len(SCENE_FILES) - 1
    client = aws_resources.client("s3")
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")  # aborted
    key = f"sessions/{session_id}/scenes/scene/v1/video.mp4"
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix=key)
    found = await record(convex, bucket, key)
    assert found["status"] == "failed" and "503" in found["error"]
    assert found["upload"]["attempt"] == 2


async def test_a_completion_whose_answer_is_lost_is_found_completed(
        aws_resources: AwsResources, bucket: str, sink: RecordingSink, session_id: str,
        tmp_path: Path) -> None:
    contents = make_scene(tmp_path / "scene")
    lost: list[str] = []

    def lose_completion_once(operation: str, params: dict[str, Any]) -> None:
        if operation == "complete_multipart_upload" and not lost:
            lost.append(params["Key"])  # S3 completed it; the answer never arrived
            raise lost_answer(f"CompleteMultipartUpload {params['Key']}")

    aws, upload, _ = settings_for(bucket, aws_resources.endpoint_url)
    async with open_s3(aws, upload) as clients:
        s3 = ScriptedS3(clients.s3, after=lose_completion_once)
        async with S3Storage(aws, upload, sink=sink, s3=s3) as store:
            result = await store.upload_dir(tmp_path / "scene", session_id, "scene", 1)
    assert result.ok and len(lost) == 1, result.to_dict()
    video = next(u for u in result.uploaded if u.file.name == "video.mp4")
    assert aws_resources.client("s3").get_object(
        Bucket=bucket, Key=video.key)["Body"].read() == contents["video.mp4"]
    assert [name for name, _ in s3.calls].count("complete_multipart_upload") == 2
    assert "abort_multipart_upload" not in [name for name, _ in s3.calls]


async def test_a_failed_file_gives_back_every_slot_of_the_shared_limiter(
        aws_resources: AwsResources, bucket: str, sink: RecordingSink, session_id: str,
        tmp_path: Path) -> None:
    from s3convex.core.errors import StorageError

    make_scene(tmp_path / "scene", video_bytes=20 * MiB)

    async def refuse_part_one_slow_the_rest(operation: str, params: dict[str, Any]) -> None:
        if operation == "upload_part":
            if params["PartNumber"] == 1:
                raise StorageError("refused (injected)", operation="UploadPart", code="InvalidRequest",
                                   status=400)
            await asyncio.sleep(0.5)  # in flight when part 1 fails: cancelled

    aws, upload, _ = settings_for(bucket, aws_resources.endpoint_url, S3_UPLOAD_CONCURRENCY="3")
    async with open_s3(aws, upload) as clients:
        s3 = ScriptedS3(clients.s3, before=refuse_part_one_slow_the_rest)
        async with S3Storage(aws, upload, sink=sink, s3=s3) as store:
            result = await store.upload_dir(tmp_path / "scene", session_id, "scene", 1)
            (failed,) = result.failed
            assert failed.file.name == "video.mp4" and failed.attempt == 1
            assert store._opened_limiter()._semaphore._value == 3  # nothing leaked


async def test_keys_outside_the_layout_are_refused_before_anything_is_uploaded(
        aws_resources: AwsResources, bucket: str, sink: RecordingSink, session_id: str,
        tmp_path: Path) -> None:
    folder = tmp_path / "scene"
    make_scene(folder, video_bytes=MiB)
    (folder / "frames").mkdir()
    (folder / "frames" / "0001.png").write_bytes(b"png")
    async with storage(aws_resources, sink) as store:
        with pytest.raises(UploadRefused, match=r"frames/0001\.png: in a subdirectory"):
            await store.upload_dir(folder, session_id, "scene", 1)
        with pytest.raises(KeyOutsideLayout, match="outside the layout"):
            await store.upload_file(folder / "scene.py", "renders/scene.py")
        with pytest.raises(KeyOutsideLayout, match="one non-empty key segment"):
            await store.upload_dir(folder, "a/b", "scene", 1)
    assert "Contents" not in aws_resources.client("s3").list_objects_v2(Bucket=bucket)
    assert sink.reports == []


async def test_upload_file_passes_metadata_kind_content_type_and_sse_kms_through(
        aws_resources: AwsResources, bucket: str, sink: RecordingSink, convex: ConvexClient,
        session_id: str, tmp_path: Path) -> None:
    path = tmp_path / "notes.bin"
    path.write_bytes(b"notes")
    kms = aws_resources.client("kms").create_key()["KeyMetadata"]["Arn"]
    async with storage(aws_resources, sink, S3_KMS_KEY_ID=kms) as store:
        uploaded = await store.upload_file(path, f"sessions/{session_id}/notes.bin",
                                           content_type="text/markdown", kind="metadata",
                                           metadata={"Renderer": "manim"})
        guessed = await store.upload_file(path, session=session_id, scene="intro", version=1,
                                          name="cover.webp")
    head = aws_resources.client("s3").head_object(Bucket=bucket, Key=uploaded.key)
    assert head["ContentType"] == "text/markdown"
    assert head["Metadata"] == {"renderer": "manim", "s3convex-run-id": uploaded.run_id}
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", kms)
    assert guessed.key == f"sessions/{session_id}/scenes/intro/v1/cover.webp"
    assert guessed.file.content_type == "image/webp" and guessed.file.kind == "thumbnail"
    found = await record(convex, bucket, uploaded.key)
    assert (found["kind"], found["status"], found["contentType"]) == (
        "metadata", "available", "text/markdown")


# --- memory ---------------------------------------------------------------------------------------

class _CountingFile:
    """A file whose reads are recorded (offset, length asked, bytes given)."""

    def __init__(self, path: Path, reads: list[tuple[int, int, int]], open_now: list[int],
                 lock: threading.Lock) -> None:
        self._file = path.open("rb", buffering=0)
        self._reads, self._open, self._lock = reads, open_now, lock
        with lock:
            open_now[0] += 1
            open_now[1] = max(open_now[1], open_now[0])

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def readinto(self, buffer: memoryview) -> int | None:
        where = self._file.tell()
        count = self._file.readinto(buffer)
        with self._lock:
            self._reads.append((where, len(buffer), count or 0))
        return count

    def close(self) -> None:
        self._file.close()
        with self._lock:
            self._open[0] -= 1


async def test_a_large_file_is_read_part_by_part_and_every_byte_once(
        aws_resources: AwsResources, bucket: str, sink: RecordingSink, session_id: str,
        tmp_path: Path) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    size = 64 * MiB + 123
    with (folder / "video.mp4").open("wb") as sparse:
        sparse.truncate(size)  # a sparse file: no disk, and no memory unless someone reads it all
    reads: list[tuple[int, int, int]] = []
    open_now, lock = [0, 0], threading.Lock()
    async with storage(aws_resources, sink, S3_UPLOAD_CONCURRENCY="3",
                       opener=lambda path: _CountingFile(path, reads, open_now, lock)) as store:
        result = await store.upload_dir(folder, session_id, "big", 1)
    assert result.ok
    video = next(u for u in result.uploaded if u.file.name == "video.mp4")
    assert video.parts == 13 and video.sha256_hex == hashlib.sha256(bytes(size)).hexdigest()
    video_reads = [r for r in reads if r[1] > 5000]  # the manifest is read too
    assert max(asked for _, asked, _ in video_reads) <= 5 * MiB
    assert sum(given for _, _, given in video_reads) == size  # each byte read exactly once
    assert sorted(offset for offset, _, _ in video_reads) == [
        i * 5 * MiB for i in range(13)]
    assert open_now[1] <= 3


_RSS_SCRIPT = r'''
import asyncio, json, os, sys, threading, time
from s3convex.settings import AwsSettings, UploadSettings, load
from s3convex.storage import S3Storage

class Sink:
    async def create_session(self, *args): return True
    async def report(self, *args): return None
    async def set_manifest(self, *args): return None

PAGE = os.sysconf("SC_PAGE_SIZE")

def rss_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 2**20

class Sampler(threading.Thread):  # the process's resident memory every 5 ms, its highest
    def __init__(self):
        super().__init__(daemon=True)
        self.highest, self.running = rss_mib(), True
    def run(self):
        while self.running:
            self.highest = max(self.highest, rss_mib())
            time.sleep(0.005)

async def main(bucket, endpoint, warmup, big):
    values = {"S3_BUCKET": bucket, "AWS_ENDPOINT_URL": endpoint, "_env_file": None,
              "S3_UPLOAD_PART_SIZE": "8MiB", "S3_UPLOAD_MULTIPART_THRESHOLD": "8MiB",
              "S3_UPLOAD_CONCURRENCY": "4"}
    async with S3Storage(load(AwsSettings, **values), load(UploadSettings, **values),
                         sink=Sink()) as storage:
        await storage.upload_file(warmup, "sessions/rss/warmup.mp4")  # every code path, once
        before = rss_mib()
        sampler = Sampler()
        sampler.start()
        uploaded = await storage.upload_file(big, "sessions/rss/big.mp4")
        sampler.running = False
        sampler.join()
    print(json.dumps({"before": before, "highest": sampler.highest, "parts": uploaded.parts}))

asyncio.run(main(*sys.argv[1:]))
'''


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc/self/statm")
async def test_uploading_a_large_sparse_file_keeps_memory_bounded(
        aws_resources: AwsResources, bucket: str, tmp_path: Path) -> None:
    """The resident memory of a process uploading 512 MiB in 8 MiB parts, 4 at a time, grows by
    about the 32 MiB in flight, not by the file (sampled every 5 ms while it uploads)."""
    warmup, big = tmp_path / "warmup.mp4", tmp_path / "big.mp4"
    warmup.write_bytes(os.urandom(17 * MiB))
    with big.open("wb") as sparse:
        sparse.truncate(512 * MiB)
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", _RSS_SCRIPT, bucket, aws_resources.endpoint_url,
                         str(warmup), str(big)],
        capture_output=True, text=True, timeout=240, cwd=ROOT, env={**os.environ})
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["parts"] == 64
    assert measured["highest"] - measured["before"] < 96, measured


# --- the sync facade ------------------------------------------------------------------------------

async def test_the_sync_facade_uploads_from_a_plain_thread(
        aws_resources: AwsResources, bucket: str, sink: RecordingSink, convex: ConvexClient,
        session_id: str, tmp_path: Path) -> None:
    make_scene(tmp_path / "scene", video_bytes=MiB)
    aws, upload, _ = settings_for(bucket, aws_resources.endpoint_url)
    held = RecordingSink()  # the real sink's client lives on this loop, not on the storage's

    def render_script() -> Any:
        with SyncS3Storage(aws, upload, sink=held) as store:
            assert store.create_session(session_id, "alice") is True
            with store.batch(session_id):
                result = store.upload_dir(tmp_path / "scene", session_id, "scene", 1)
                assert not any(u["status"] == "available" for c in held.reports
                               for u in c.updates)
            return result

    result = await asyncio.to_thread(render_script)
    assert result.ok and len(result.uploaded) == len(SCENE_FILES)
    finals = [u for c in held.reports for u in c.updates if u["status"] == "available"]
    assert len(finals) == len(SCENE_FILES) + 1
    assert aws_resources.client("s3").head_object(Bucket=bucket, Key=result.manifest.key)


# --- metrics --------------------------------------------------------------------------------------

async def test_uploads_are_counted_in_metrics(
        aws_resources: AwsResources, bucket: str, sink: RecordingSink, session_id: str,
        tmp_path: Path, metric_reader: Any) -> None:
    from tests.test_metrics import Deltas, snapshot

    folder = tmp_path / "scene"
    make_scene(folder, video_bytes=MiB)
    before = snapshot(metric_reader)

    def vanish(file: PlannedFile) -> None:
        if file.name == "subtitles.vtt":
            (folder / "subtitles.vtt").unlink()

    async with storage(aws_resources, sink, subscribers=[Recorder(vanish)]) as store:
        result = await store.upload_dir(folder, session_id, "scene", 1)
    delta = Deltas(before, snapshot(metric_reader))
    assert len(result.failed) == 1
    assert delta("s3convex.upload.files", kind="video", outcome="available") == 1
    assert delta("s3convex.upload.files", kind="subtitle", outcome="failed") == 1
    assert delta("s3convex.upload.failures", kind="subtitle", **{"error.type": "FileUnreadable"}) == 1
    assert delta("s3convex.upload.bytes", kind="video") == MiB
    assert delta("s3convex.upload.duration", kind="video", outcome="available") == 1
