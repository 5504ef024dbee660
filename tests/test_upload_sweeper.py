"""The daemon's stalled-upload sweeper (consumer/upload_sweeper.py, R6.2): an ``uploading``
record whose uploader went away becomes ``failed`` while the daemon runs; a live one does not;
``UPLOAD_SWEEP_INTERVAL=0`` turns it off; a sweeper that breaks stops the daemon."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from s3convex.consumer.daemon import Daemon
from s3convex.consumer.upload_sweeper import UploadSweeper
from s3convex.core.errors import ConvexFunctionError
from tests.stack import Stack


def update(key: str, session_id: str, bytes_sent: int) -> dict[str, Any]:
    return {"bucket": "", "key": key, "status": "uploading", "bytesSent": bytes_sent,
            "bytesTotal": 1_000, "attempt": 1, "sessionId": session_id, "kind": "video"}


async def report(stack: Stack, session_id: str, *updates: dict[str, Any]) -> None:
    await stack.convex.mutation("uploads:report", {
        "sessionId": session_id, "runId": "20261201T000000000Z-sweeper",
        "updates": [{**u, "bucket": stack.bucket} for u in updates]})


async def status(stack: Stack, key: str) -> tuple[str, str | None]:
    found = await stack.record(key)
    assert found is not None
    return found["status"], found.get("error")


async def test_an_uploading_record_left_behind_is_swept_to_failed_while_a_live_one_is_not(
        stack: Stack) -> None:
    session_id = f"w-{uuid.uuid4().hex[:10]}"
    stalled = f"sessions/{session_id}/scenes/a/v1/video.mp4"
    live = f"sessions/{session_id}/scenes/a/v1/other.mp4"
    await report(stack, session_id, update(stalled, session_id, 100), update(live, session_id, 1))
    daemon = Daemon(stack.settings(UPLOAD_SWEEP_INTERVAL="0.2", UPLOAD_STALE_AFTER="1.5"))
    running = asyncio.create_task(daemon.run())
    try:
        started = time.monotonic()
        sent = 1
        while time.monotonic() - started < 20:
            sent += 50  # the live upload keeps reporting progress; the stalled one never does
            await report(stack, session_id, update(live, session_id, sent))
            if (await status(stack, stalled))[0] == "failed":
                break
            await asyncio.sleep(0.25)
        swept_after = time.monotonic() - started
        assert await status(stack, stalled) == ("failed", "upload stalled")
        assert swept_after >= 1.0  # not before the timeout (its report was < 0.5 s before start)
        assert (await status(stack, live))[0] == "uploading"
        summary = (await stack.convex.query("sessions:get", {"sessionId": session_id}))["summary"]
        assert (summary["failed"], summary["uploading"]) == (1, 1)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(running, 60) == 0


async def test_with_the_interval_at_zero_nothing_is_swept(stack: Stack) -> None:
    session_id = f"w-{uuid.uuid4().hex[:10]}"
    key = f"sessions/{session_id}/scenes/a/v1/video.mp4"
    await report(stack, session_id, update(key, session_id, 100))
    daemon = Daemon(stack.settings(UPLOAD_SWEEP_INTERVAL="0", UPLOAD_STALE_AFTER="1"))
    running = asyncio.create_task(daemon.run())
    try:
        await asyncio.sleep(2.5)
        assert await status(stack, key) == ("uploading", None)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(running, 60) == 0


async def test_one_sweep_calls_again_while_a_call_sweeps_its_whole_limit(stack: Stack) -> None:
    session_id = f"w-{uuid.uuid4().hex[:10]}"
    keys = [f"sessions/{session_id}/scenes/a/v1/f{i}.mp4" for i in range(5)]
    await report(stack, session_id, *(update(k, session_id, 10) for k in keys))
    await asyncio.sleep(1.2)
    sweeper = UploadSweeper(stack.convex, stale_after_s=1, interval_s=60, limit=2, max_calls=100)
    assert await sweeper.sweep_once() >= 5  # 2 + 2 + 1 (or more: other tests' leftovers)
    for key in keys:
        assert await status(stack, key) == ("failed", "upload stalled")


async def test_the_daemon_stops_when_the_sweeper_breaks(
        stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async def broken(self: UploadSweeper) -> int:
        raise ConvexFunctionError("uploads:sweepStale", "Could not find function")

    monkeypatch.setattr(UploadSweeper, "sweep_once", broken)
    daemon = Daemon(stack.settings(UPLOAD_SWEEP_INTERVAL="0.2"))
    assert await asyncio.wait_for(daemon.run(), 60) == 1
    failed = [r for r in caplog.records if r.getMessage() == "supervised task failed; stopping"]
    assert failed and getattr(failed[0], "task", None) == "upload-sweeper"
