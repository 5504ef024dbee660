"""The storage library's parts on their own, no servers: keys from the layout, the plan and its
checks, the counting request body, the status writer's coalescing, rate gate, failures and
batching (with a fake StatusSink), the upload settings."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import time
from pathlib import Path
from typing import Any

import pytest

from s3convex.core.errors import ConfigError, ConvexFunctionError, ConvexUnavailable
from s3convex.core.layout import KeyLayout
from s3convex.settings import UploadSettings, load
from s3convex.storage import (
    KeyOutsideLayout,
    ManifestRef,
    PlannedFile,
    StatusWriter,
    TransferConfig,
    UploadedFile,
    UploadRefused,
    new_run_id,
)
from s3convex.storage.body import ProgressBody, arm_before_send
from s3convex.storage.errors import CHECKSUM_HINT, explain_checksum_refusal
from s3convex.storage.keys import build_key, check_key, guess_content_type
from s3convex.storage.plan import plan_dir, plan_file
from s3convex.storage.results import FailedFile
from s3convex.storage.status import ConvexStatusSink, base_update
from tests.storage_support import RecordingSink

LAYOUT = KeyLayout.default()
MiB = 1024 * 1024


# --- keys ------------------------------------------------------------------------------------

def test_keys_are_built_from_the_first_pattern_and_read_back_the_same() -> None:
    key = build_key(LAYOUT, session="s1", scene="intro", version=3, name="video.mp4")
    assert key == "sessions/s1/scenes/intro/v3/video.mp4"
    info = LAYOUT.classify(key)
    assert (info.session_id, info.scene_id, info.version, info.kind) == ("s1", "intro", 3, "video")


@pytest.mark.parametrize(("layout", "fields", "problem"), [
    (LAYOUT, {"session": "a/b", "scene": "x", "version": 1}, "one non-empty key segment"),
    (LAYOUT, {"session": "s1", "scene": "", "version": 1}, "one non-empty key segment"),
    (LAYOUT, {"session": "s1", "scene": "x", "version": -1}, "not a whole number"),
    (LAYOUT, {"session": "s1", "scene": None, "version": None}, "needs {sceneId}, {version}"),
    (KeyLayout.parse("sessions/{sessionId}/{file}"), {"session": "s1", "scene": "x",
                                                     "version": None}, "no place for {sceneId}"),
    (KeyLayout.parse("tenants/*/sessions/{sessionId}/{file}"),
     {"session": "s1", "scene": None, "version": None}, "'*' segment"),
])
def test_a_key_the_layout_cannot_hold_is_refused(layout: KeyLayout, fields: dict,
                                                 problem: str) -> None:
    with pytest.raises(KeyOutsideLayout, match=problem.replace("{", r"\{").replace("}", r"\}")):
        build_key(layout, name="video.mp4", **fields)


def test_a_whole_key_is_checked_against_the_layout() -> None:
    assert check_key(LAYOUT, "sessions/s1/notes.txt").session_id == "s1"
    with pytest.raises(KeyOutsideLayout, match="outside the layout"):
        check_key(LAYOUT, "uploads/video.mp4")
    with pytest.raises(KeyOutsideLayout, match="1-1024 bytes"):
        check_key(LAYOUT, "sessions/s1/" + "x" * 1020)
    # A key given whole must read as the session, scene and version it is uploaded for.
    with pytest.raises(KeyOutsideLayout, match="reads as session 's1', scene 'intro'"):
        check_key(LAYOUT, "sessions/s1/scenes/intro/v3/video.mp4", session="s1", scene="outro",
                  version=3)


def test_content_types_are_guessed_the_same_on_every_machine() -> None:
    assert guess_content_type("video.mp4") == "video/mp4"
    assert guess_content_type("scene.ts") == "text/x-typescript"  # not MPEG transport stream
    assert guess_content_type("subtitles.vtt") == "text/vtt"
    assert guess_content_type("subtitles.SRT") == "application/x-subrip"
    assert guess_content_type("archive.tar.gz") == "application/x-tar"
    assert guess_content_type("README") == "application/octet-stream"


def test_run_ids_sort_by_start_time() -> None:
    first = new_run_id()
    time.sleep(0.002)
    second = new_run_id()
    assert first < second and len(first) <= 64


# --- the plan ------------------------------------------------------------------------------

def test_a_directory_is_planned_with_every_problem_named_before_anything_is_sent(
        tmp_path: Path) -> None:
    (tmp_path / "video.mp4").write_bytes(b"v")
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "0001.png").write_bytes(b"p")
    os.mkfifo(tmp_path / "pipe.vtt")
    with pytest.raises(UploadRefused) as refused:
        plan_dir(tmp_path, bucket="b", layout=LAYOUT, session="s1", scene="intro", version=1)
    problems = refused.value.problems
    assert len(problems) == 3, problems
    assert any(p.startswith("manifest.json: the upload writes") for p in problems)
    assert any(p.startswith("frames/0001.png: in a subdirectory") for p in problems)
    assert any(p.startswith("pipe.vtt: not a regular file") for p in problems)
    assert str(refused.value).startswith("nothing was uploaded: 3 problems")

    planned = plan_dir(tmp_path, bucket="b", layout=LAYOUT, session="s1", scene="intro",
                       version=1, exclude=("manifest.json", "frames/*", "*.vtt"))
    assert [(p.name, p.key, p.kind, p.content_type) for p in planned] == [
        ("video.mp4", "sessions/s1/scenes/intro/v1/video.mp4", "video", "video/mp4")]


def test_globs_select_and_an_empty_selection_is_refused(tmp_path: Path) -> None:
    for name in ("a.py", "b.py", "c.json"):
        (tmp_path / name).write_text(name)
    planned = plan_dir(tmp_path, bucket="b", layout=LAYOUT, session="s", scene="x", version=2,
                       include=("*.py",), exclude=("b.*",))
    assert [p.name for p in planned] == ["a.py"]
    with pytest.raises(UploadRefused, match="no file matches"):
        plan_dir(tmp_path, bucket="b", layout=LAYOUT, session="s", scene="x", version=2,
                 include=("*.mov",))
    with pytest.raises(UploadRefused, match="not a directory"):
        plan_dir(tmp_path / "missing", bucket="b", layout=LAYOUT, session="s", scene="x",
                 version=2)


def test_user_metadata_is_checked_and_the_run_id_is_reserved(tmp_path: Path) -> None:
    path = tmp_path / "video.mp4"
    path.write_bytes(b"v")
    common = {"bucket": "b", "layout": LAYOUT, "session": "s", "scene": "x", "version": 1}
    planned = plan_file(path, metadata={"Renderer": "manim 0.18"}, kind="other", **common)
    assert planned.metadata == {"renderer": "manim 0.18"} and planned.kind == "other"
    for bad, problem in (({"s3convex-run-id": "x"}, "the upload's own"),
                         ({"bad key": "x"}, "HTTP header token"),
                         ({"k": "ünïcode"}, "printable ASCII"),
                         ({"k": "x" * 3000}, "exceeds S3's 2048")):
        with pytest.raises(UploadRefused, match=problem):
            plan_file(path, metadata=bad, **common)
    with pytest.raises(KeyOutsideLayout, match="not both"):
        plan_file(path, key="sessions/s/x.mp4", session="s", bucket="b", layout=LAYOUT)
    with pytest.raises(UploadRefused, match="cannot be read"):
        plan_file(tmp_path / "gone.mp4", **common)


# --- the counting body -----------------------------------------------------------------------

class _Request:
    def __init__(self, body: object) -> None:
        self.body = body


def test_a_body_counts_what_is_sent_once_and_takes_back_what_is_sent_again() -> None:
    data = os.urandom(1000)
    body = ProgressBody(len(data))
    view = body.fill(io.BytesIO(data).readinto)
    assert bytes(view) == data
    view.release()
    deltas: list[int] = []
    body.bind(deltas.append)

    body.read()  # botocore reading it to sign it: not sent yet
    body.seek(0)
    assert deltas == []
    arm_before_send(_Request(body))  # the request leaves
    body.read(400)
    body.read(400)
    assert deltas == [400, 400]
    body.seek(0)  # botocore resends it after a 503: those bytes are taken back…
    assert sum(deltas) == 0
    body.read()  # …and the re-signing read does not count
    assert sum(deltas) == 0
    arm_before_send(_Request(body))
    body.read()
    body.settle()
    assert sum(deltas) == len(data)
    assert all(isinstance(d, int) for d in deltas)


def test_a_body_settles_to_its_size_and_abandons_to_nothing() -> None:
    body = ProgressBody(10)
    deltas: list[int] = []
    body.bind(deltas.append)
    body.settle()  # never armed (a wrapped body read elsewhere): counted at the end
    assert sum(deltas) == 10
    body.seek(0)
    arm_before_send(_Request(body))
    body.read(4)
    body.abandon()
    assert sum(deltas) == 10 - 10  # the failed attempt took back everything it had counted
    with pytest.raises(EOFError):
        ProgressBody(10).fill(io.BytesIO(b"short").readinto)


def test_part_sizes_grow_to_fit_ten_thousand_parts() -> None:
    config = TransferConfig(part_size=8 * MiB)
    assert config.part_size_for(80 * 1024 * MiB) == 16 * MiB  # 80 GiB / 8 MiB = 10,240 parts
    assert config.part_size_for(1024 * MiB) == 8 * MiB


# --- the status writer ------------------------------------------------------------------------

def _planned(name: str, size: int = 100, session: str = "s1") -> PlannedFile:
    return PlannedFile(path=Path(name), name=name, bucket="b",
                       key=f"sessions/{session}/scenes/x/v1/{name}", size=size, mtime_ns=0,
                       content_type="video/mp4", kind="video", session_id=session, scene_id="x",
                       version=1)


def _uploaded(file: PlannedFile, attempt: int = 1) -> UploadedFile:
    return UploadedFile(file=file, run_id="r1", sha256=b"\0" * 32, etag="e", version_id=None,
                        s3_checksum=None, checksum_type=None, s3_crc64nvme=None, parts=1, part_size=file.size,
                        attempt=attempt, uploaded_at_ms=1_800_000_000_000, seconds=0.1)


async def test_progress_of_many_files_is_coalesced_into_one_report_per_interval() -> None:
    sink = RecordingSink()
    writer = StatusWriter(sink, interval=0.2)
    files = [_planned(f"f{i}.mp4", size=1000) for i in range(50)]
    queued = time.monotonic()
    for file in files:
        writer.on_queued(file, "r1", 1)
    await asyncio.sleep(0.05)
    assert not sink.reports  # the first report waits an interval: pending and progress in one
    started = time.monotonic()
    while time.monotonic() - started < 0.9:
        for file in files:
            writer.on_progress(file, "r1", 1)
        await asyncio.sleep(0.01)
    assert sink.reports[0].at - queued >= 0.2 - 0.01
    assert {u["status"] for u in sink.reports[0].updates} == {"uploading"}
    for file in files:
        writer.on_done(_uploaded(file))
    await writer.close()
    reports = sink.reports
    elapsed = reports[-1].at - reports[0].at
    assert len(reports) <= elapsed / 0.2 + 1.5, [round(r.at - started, 3) for r in reports]
    gaps = [b.at - a.at for a, b in itertools.pairwise(reports)]
    assert min(gaps) >= 0.2 - 0.01
    for file in files:  # monotonic, and the last word is available
        sent = [u["bytesSent"] for u in sink.updates_for(file.key)]
        assert sent == sorted(sent)
        assert sink.last(file.key)["status"] == "available"
    assert all(len(r.updates) <= 50 for r in reports)  # one update per file per report


async def test_a_retried_failure_is_reported_even_when_the_retry_follows_at_once() -> None:
    sink = RecordingSink()
    writer = StatusWriter(sink, interval=0.2, clock=lambda: 1_800_000_000.0)
    file = _planned("video.mp4", size=100)
    writer.on_queued(file, "r1", 1)
    writer.on_progress(file, "r1", 60)
    writer.on_retry(file, "r1", 2, 1.5, ConvexUnavailable("boom", operation="UploadPart"))
    writer.on_progress(file, "r1", 10)  # attempt 2 started before the next flush
    await writer.flush()
    updates = sink.updates_for(file.key)
    failed, current = updates[-2], updates[-1]
    assert failed["status"] == "failed" and failed["attempt"] == 1
    assert failed["nextRetryAt"] == 1_800_000_001_500 and "boom" in failed["error"]
    assert current["status"] == "uploading" and current["attempt"] == 2
    assert "error" not in current and "nextRetryAt" not in current  # Convex: failed only
    await writer.close()


async def test_while_a_retry_waits_the_failure_is_the_state() -> None:
    sink = RecordingSink()
    writer = StatusWriter(sink, interval=0.05)
    file = _planned("video.mp4")
    writer.on_queued(file, "r1", 1)
    writer.on_retry(file, "r1", 2, 5.0, ConvexUnavailable("503", operation="PutObject"))
    await writer.flush()
    assert sink.last(file.key)["status"] == "failed"
    await writer.flush()  # nothing new: nothing sent
    assert len(sink.reports) == 1
    writer.on_done(FailedFile(file=file, run_id="r1", error="gone", error_type="FileUnreadable",
                              retryable=False, attempt=2))
    await writer.close()
    assert sink.last(file.key) | {} == sink.last(file.key)
    assert (sink.last(file.key)["status"], sink.last(file.key)["attempt"]) == ("failed", 2)


async def test_held_finals_wait_for_commit_and_the_manifest_comes_after_them() -> None:
    sink = RecordingSink()
    writer = StatusWriter(sink, interval=0.05, defer_finals=True)
    files = [_planned("video.mp4"), _planned("scene.py", size=10)]
    for file in files:
        writer.on_queued(file, "r1", 1)
        writer.on_done(_uploaded(file))
    writer.manifest(ManifestRef("s1", "x", 1, "b", "sessions/s1/scenes/x/v1/manifest.json", "r1"))
    await asyncio.sleep(0.2)
    assert all(u["status"] != "available" for r in sink.reports for u in r.updates)
    assert sink.last("sessions/s1/scenes/x/v1/video.mp4")["bytesSent"] == 100
    assert not sink.manifest_refs
    await writer.commit("s1")
    finals = sink.reports[-1].updates
    assert {u["status"] for u in finals} == {"available"} and len(finals) == 2
    # The reference rides with the finals, in the same report (uploads:report's manifests).
    assert [ref.key for _, ref in sink.manifest_refs] == ["sessions/s1/scenes/x/v1/manifest.json"]
    assert sink.manifest_refs[0][0] == len(sink.calls) - 1
    await writer.close()


async def test_a_manifest_queued_during_a_flush_waits_for_its_own_record() -> None:
    class SlowSink(RecordingSink):
        async def report(self, session_id: str, run_id: str, updates: Any,
                         manifests: Any = ()) -> None:
            await super().report(session_id, run_id, updates, manifests)
            await asyncio.sleep(0.1)

    sink = SlowSink()
    writer = StatusWriter(sink, interval=0.01)
    video, manifest = _planned("video.mp4"), _planned("manifest.json")
    writer.on_queued(video, "r1", 1)
    flushing = asyncio.create_task(writer.flush())
    await asyncio.sleep(0.02)  # the report of video.mp4 is on its way
    writer.on_queued(manifest, "r1", 1)
    writer.on_done(_uploaded(manifest))
    writer.manifest(ManifestRef("s1", "x", 1, "b", manifest.key, "r1"))
    await flushing
    await writer.close()
    order = [(c.function, [u["key"] for u in c.updates]) for c in sink.calls]
    manifest_final = next(i for i, c in enumerate(sink.calls) if c.function == "report" and any(
        u["key"] == manifest.key and u["status"] == "available" for u in c.updates))
    (with_ref, _), = sink.manifest_refs
    assert manifest_final == with_ref and manifest_final > 0, order  # not the report in flight


async def test_the_first_report_waits_an_interval_or_for_the_first_file_done() -> None:
    sink = RecordingSink()
    writer = StatusWriter(sink, interval=0.3)
    quick, slow = _planned("quick.json", size=10), _planned("video.mp4", size=1000)
    queued = time.monotonic()
    writer.on_queued(quick, "r1", 1)
    writer.on_queued(slow, "r1", 1)
    await asyncio.sleep(0.05)
    assert not sink.reports  # pending alone is not worth a mutation of its own
    writer.on_done(_uploaded(quick))  # a file no report has shown: the first report goes now
    await asyncio.sleep(0.05)
    first, = sink.reports
    assert first.at - queued < 0.2
    assert {u["key"]: u["status"] for u in first.updates} == {
        quick.key: "available", slow.key: "pending"}  # the other one seen while it uploads
    writer.on_progress(slow, "r1", 10)
    await asyncio.sleep(0.4)
    second = sink.reports[1]
    assert second.at - first.at >= 0.3 - 0.01
    assert [(u["key"], u["status"]) for u in second.updates] == [(slow.key, "uploading")]
    await writer.close()


async def test_after_a_quiet_spell_the_first_report_carries_pending_and_progress() -> None:
    sink = RecordingSink()
    writer = StatusWriter(sink, interval=0.2)
    video = _planned("video.mp4", size=1000)
    queued = time.monotonic()
    writer.on_queued(video, "r1", 1)
    writer.on_started(video, "r1")
    writer.on_progress(video, "r1", 100)
    await asyncio.sleep(0.3)
    first, = sink.reports
    assert first.at - queued >= 0.2 - 0.01
    assert [(u["status"], u["bytesSent"]) for u in first.updates] == [("uploading", 100)]
    await writer.close()


async def test_one_file_over_many_intervals_keeps_to_the_budget_with_its_manifest() -> None:
    # ⌈files / 100⌉ + 1 / interval writes a second: the first report one interval in, the
    # manifest reference in the last one (flush(last=True), as upload_dir ends).
    sink = RecordingSink()
    interval = 0.1
    writer = StatusWriter(sink, interval=interval)
    video = _planned("video.mp4", size=10_000)
    started = time.monotonic()
    writer.on_queued(video, "r1", 1)
    writer.on_started(video, "r1")
    while time.monotonic() - started < 1.05:
        writer.on_progress(video, "r1", 10)
        await asyncio.sleep(0.005)
    writer.on_done(_uploaded(video))
    manifest = _planned("manifest.json", size=10)
    writer.on_queued(manifest, "r1", 1)
    writer.on_done(_uploaded(manifest))
    writer.manifest(ManifestRef("s1", "x", 1, "b", manifest.key, "r1"))
    await writer.flush(last=True)
    elapsed = time.monotonic() - started
    assert len(sink.calls) <= 1 + elapsed / interval, [round(c.at - started, 3) for c in sink.calls]
    last = sink.calls[-1]
    assert last.manifests and {u["status"] for u in last.updates} == {"available"}
    sent = [u["bytesSent"] for u in sink.updates_for(video.key)]
    assert sent == sorted(sent) and sink.updates_for(video.key)[0]["status"] == "uploading"
    await writer.close()
    assert len(sink.calls) <= 1 + elapsed / interval  # nothing left to write at close


async def test_the_convex_sink_sends_references_with_the_last_chunk_of_updates() -> None:
    class Convex:
        def __init__(self) -> None:
            self.calls: list[dict[str, Any]] = []

        async def mutation(self, path: str, args: dict[str, Any], **_: Any) -> Any:
            self.calls.append(args)
            return {"results": [], "session": {"filesDone": len(self.calls)}}

    convex = Convex()
    sink = ConvexStatusSink(convex)  # type: ignore[arg-type]
    updates = [base_update(_planned(f"f{i}.json"), "pending", 1, 0) for i in range(1001)]
    refs = [ManifestRef("s1", "x", v, "b", f"m{v}.json", "r1") for v in range(12)]
    progress = await sink.report("s1", "r1", updates, refs)
    assert [(len(c["updates"]), len(c.get("manifests", []))) for c in convex.calls] == [
        (500, 0), (500, 0), (1, 10), (0, 2)]
    assert convex.calls[2]["manifests"][0] == {"sceneId": "x", "version": 0, "bucket": "b",
                                               "key": "m0.json"}
    assert progress is not None and progress.files_done == 4
    convex.calls.clear()
    assert await sink.report("s1", "r1", []) is None and not convex.calls  # nothing: no call


async def test_a_batch_holds_one_session_only() -> None:
    sink = RecordingSink()
    writer = StatusWriter(sink, interval=0.05)
    writer.begin_batch("s1")
    held, free = _planned("a.mp4", session="s1"), _planned("b.mp4", session="s2")
    for file in (held, free):
        writer.on_queued(file, "r1", 1)
        writer.on_done(_uploaded(file))
    await writer.flush()
    assert sink.last(free.key)["status"] == "available"
    assert sink.last(held.key)["status"] == "uploading"
    writer.end_batch("s1")
    await writer.commit("s1")
    assert sink.last(held.key)["status"] == "available"
    await writer.close()


async def test_a_report_convex_cannot_take_is_sent_again_and_one_it_refuses_is_dropped() -> None:
    sink = RecordingSink()
    writer = StatusWriter(sink, interval=0.05)
    file = _planned("video.mp4")
    sink.fail_next.append(ConvexUnavailable("overloaded", operation="uploads:report", status=503))
    writer.on_queued(file, "r1", 1)
    await writer.flush()
    writer.on_progress(file, "r1", 30)
    await writer.flush()  # the pending state and the progress since, in one report
    assert [u["bytesSent"] for u in sink.reports[-1].updates] == [30]
    assert writer.errors == []
    sink.fail_next.append(ConvexFunctionError("uploads:report", "bad", {"code": "bad_request"}))
    writer.on_progress(file, "r1", 30)
    await writer.flush()
    assert len(writer.errors) == 1 and "bad_request" in writer.errors[0]
    await writer.flush()
    assert len(sink.reports) == 3  # dropped: not sent again
    await writer.close()


async def test_an_update_convex_refuses_is_dropped_and_the_others_are_sent_again() -> None:
    sink = RecordingSink()
    writer = StatusWriter(sink, interval=0.01)
    files = [_planned(f"f{i}.mp4") for i in range(3)]
    for file in files:
        writer.on_queued(file, "r1", 1)
    sink.fail_next.append(ConvexFunctionError("uploads:report", "bad", {
        "code": "bad_request", "reason": "key is empty", "index": 1}))
    await writer.flush()
    first, second = sink.reports
    assert len(first.updates) == 3
    assert [u["key"] for u in second.updates] == [files[0].key, files[2].key]
    assert writer.errors == [f"uploads:report {files[1].key}: key is empty"]
    await writer.close()


async def test_a_commit_convex_cannot_take_raises_and_keeps_the_finals(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from s3convex.core.retrying import RetryBudget

    sink = RecordingSink()
    writer = StatusWriter(sink, interval=0.01, defer_finals=True,
                          final_retry=RetryBudget(attempts=2, base=0.01, cap=0.01))
    file = _planned("video.mp4")
    writer.on_queued(file, "r1", 1)
    writer.on_done(_uploaded(file))
    await writer.flush()
    sink.fail_next.extend([ConvexUnavailable("down", operation="uploads:report")] * 2)
    with pytest.raises(ConvexUnavailable):
        await writer.commit()
    await writer.commit()
    assert sink.last(file.key)["status"] == "available"
    await writer.close()


def test_the_checksum_refusal_of_a_store_says_what_to_do() -> None:
    from s3convex.core.errors import StorageError

    refused = StorageError("The SHA256 you specified did not match", code="BadDigest", status=400)
    assert CHECKSUM_HINT in str(explain_checksum_refusal(refused))
    other = StorageError("no", code="AccessDenied", status=403)
    assert CHECKSUM_HINT not in str(explain_checksum_refusal(other))


# --- settings --------------------------------------------------------------------------------

def test_upload_settings_take_sizes_with_units_and_name_a_bad_variable() -> None:
    settings = load(UploadSettings, S3_UPLOAD_PART_SIZE="16MiB", S3_UPLOAD_MULTIPART_THRESHOLD="64 MB",
                    S3_UPLOAD_CHECKSUM="SHA256", S3_UPLOAD_ON_WRITE="false", _env_file=None)
    assert settings.part_size == 16 * MiB and settings.multipart_threshold == 64_000_000
    assert settings.checksum == "sha256" and settings.on_write is False
    defaults = load(UploadSettings, _env_file=None)
    assert (defaults.multipart_threshold, defaults.part_size, defaults.concurrency) == (
        8 * MiB, 8 * MiB, 10)
    with pytest.raises(ConfigError, match=r"S3_UPLOAD_PART_SIZE=1048576 is invalid: .* 5242880"):
        load(UploadSettings, S3_UPLOAD_PART_SIZE="1MiB", _env_file=None)
    with pytest.raises(ConfigError, match="AWS_REQUEST_CHECKSUM_CALCULATION"):
        load(UploadSettings, AWS_REQUEST_CHECKSUM_CALCULATION="never", _env_file=None)
