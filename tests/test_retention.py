"""Retention (consumer/retention.py, ``retention:plan`` / ``retention:mark``): 7 versions
of a scene with keep=3 → exactly the 3 oldest obsolete, never the current; the current
manifest's keys are protected; plan lists sizes, apply marks, the worker removes. Also the CLI
(``s3convex retention plan|apply``) as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from s3convex.adapters.aws import open_clients
from s3convex.consumer.cleanup import CleanupWorker
from s3convex.consumer.retention import Retention, RetentionPolicy
from s3convex.core.layout import KeyLayout
from s3convex.settings import AwsSettings, CleanupSettings, load

ROOT = Path(__file__).resolve().parent.parent


async def seed(aws_resources: Any, convex: Any) -> tuple[str, Any]:
    """One scene with versions 1-7 (a video and a manifest each); v7's manifest also lists v2's
    video (a file the current version still uses)."""
    s3 = aws_resources.client("s3")
    s3.create_bucket(Bucket=aws_resources.bucket)
    session = f"r-{uuid.uuid4().hex[:8]}"
    base = f"sessions/{session}/scenes/intro"
    events = []
    now = int(time.time() * 1000)
    for version in range(1, 8):
        video = f"{base}/v{version}/video.mp4"
        manifest = f"{base}/v{version}/manifest.json"
        listed = [video] + ([f"{base}/v2/video.mp4"] if version == 7 else [])
        bodies = {video: b"v" * (100 * version),
                  manifest: json.dumps({"files": [{"key": k} for k in listed]}).encode()}
        for key, body in bodies.items():
            etag = s3.put_object(Bucket=aws_resources.bucket, Key=key, Body=body)["ETag"].strip('"')
            events.append({"type": "created", "bucket": aws_resources.bucket, "key": key,
                           "eventName": "ObjectCreated:Put", "eventTime": now + version,
                           "size": len(body), "etag": etag, "sessionId": session,
                           "sceneId": "intro", "version": version,
                           "kind": "video" if key.endswith(".mp4") else "manifest"})
    await convex.mutation("assets:applyEvents", {"events": events})
    await convex.mutation("uploads:setManifest", {
        "sessionId": session, "sceneId": "intro", "version": 7, "bucket": aws_resources.bucket,
        "key": f"{base}/v7/manifest.json", "runId": "run-7"})
    return session, s3


async def test_keep_three_of_seven(aws_resources, convex) -> None:
    session, s3 = await seed(aws_resources, convex)
    async with open_clients(load(AwsSettings), max_pool_connections=4) as opened:
        retention = Retention(convex, opened.s3, RetentionPolicy(keep=3))
        plan = [v async for v in retention.plan(session=session)]
        assert [v.version for v in plan] == [1, 2, 3]
        assert all(v.current_version == 7 for v in plan)
        by_version = {v.version: v for v in plan}
        # v2's video is listed by the current manifest: only its manifest.json goes.
        assert [f["key"].rsplit("/", 2)[-2:] for f in by_version[2].files] == [["v2", "manifest.json"]]
        assert by_version[1].bytes == 100 + len(json.dumps({"files": [{"key": f"sessions/{session}/scenes/intro/v1/video.mp4"}]}))

        totals = await retention.apply(actor="ops@test", session=session)
        assert totals == {"versions": 3, "marked": 5, "refused": 0,
                          "bytes": sum(v.bytes for v in plan)}
        assert [v async for v in retention.plan(session=session)] == []  # nothing left to mark

        cleaner = CleanupWorker(convex, opened.s3, bucket=aws_resources.bucket, layout=KeyLayout.default(),
                                settings=load(CleanupSettings, _env_file=None), operator="test")
        report = await cleaner.run_once(session=session)
        assert report.deleted == 5
    left = {o["Key"] for o in s3.list_objects_v2(Bucket=aws_resources.bucket)["Contents"]}
    assert {k.split("/")[-2] for k in left} == {"v2", "v4", "v5", "v6", "v7"}
    assert f"sessions/{session}/scenes/intro/v2/video.mp4" in left
    record = await convex.query("assets:getByKey", {"bucket": aws_resources.bucket,
                                                    "key": f"sessions/{session}/scenes/intro/v1/video.mp4"})
    assert record["status"] == "deleted" and record["deleteReason"] == "retention"
    scene = await convex.query("sessions:scene", {"sessionId": session, "sceneId": "intro"})
    assert scene["currentVersion"] == 7 and scene["files"]["video"]["key"].endswith("v7/video.mp4")


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s3convex", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


async def test_the_retention_and_cleanup_commands(aws_resources, convex, convex_server) -> None:
    session, _ = await seed(aws_resources, convex)
    env = {**aws_resources.env, "CONVEX_URL": convex_server.url,
           "CONVEX_DEPLOY_KEY": convex_server.admin_key, "RETENTION_KEEP_VERSIONS": "5"}
    planned = cli(env, "retention", "plan", "--session", session)
    assert planned.returncode == 0, planned.stderr
    document = json.loads(planned.stdout)
    assert [v["version"] for v in document["versions"]] == [1]
    assert document["files"] == 2 and document["bytes"] > 100

    applied = cli(env, "retention", "apply", "--session", session, "--keep", "4")
    assert applied.returncode == 0, applied.stderr
    # v1's two files and v2's manifest (v2's video is listed by the current manifest).
    assert json.loads(applied.stdout)["marked"] == 3

    dry = cli(env, "cleanup", "--dry-run", "--session", session)
    assert dry.returncode == 0, dry.stderr
    assert len(json.loads(dry.stdout)["wouldDelete"]) == 3
    done = cli(env, "cleanup", "--session", session, "--limit", "2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deleted"] == 2
