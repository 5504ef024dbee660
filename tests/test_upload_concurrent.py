"""Two render workers upload the same scene version at once, each in its own process (R5.5):
one final state per asset, the later run's, a manifest that agrees with S3 and Convex, and a
session summary that counts each file once."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from convex_local.launcher import LocalConvex
from s3convex.adapters.convex import ConvexClient
from tests.backends import AwsResources
from tests.storage_support import SCENE_FILES, TEST_UPLOAD, make_scene

ROOT = Path(__file__).resolve().parent.parent
ALL_FILES = (*SCENE_FILES, "manifest.json")


def spawn(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.storage_support", "upload", *args],
                            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def events(process: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err[-3000:]
    return [json.loads(line) for line in out.splitlines() if line.strip()]


async def test_two_processes_uploading_the_same_version_end_consistent(
        aws_resources: AwsResources, bucket: str, convex_server: LocalConvex,
        convex: ConvexClient, tmp_path: Path) -> None:
    session_id = f"c-{uuid.uuid4().hex[:10]}"
    contents = make_scene(tmp_path / "scene")
    env = {**os.environ, **aws_resources.env, **TEST_UPLOAD, "CONVEX_URL": convex_server.url,
           "CONVEX_DEPLOY_KEY": convex_server.admin_key}
    workers = [spawn(env, str(tmp_path / "scene"), session_id, "scene", "1", "--owner", "alice",
                     "--wait-go") for _ in range(2)]
    for worker in workers:  # both open (clients made, Convex reached), then both go at once
        assert worker.stdout is not None and json.loads(worker.stdout.readline())["event"] == "open"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    results = [next(e for e in events(w) if e["event"] == "uploaded")["result"] for w in workers]
    assert all(r["ok"] and not r["statusErrors"] for r in results), results
    runs = sorted(r["runId"] for r in results)
    assert runs[0] != runs[1]
    later = runs[1]

    prefix = f"sessions/{session_id}/scenes/scene/v1/"
    s3 = aws_resources.client("s3")
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read())
    assert manifest["runId"] in runs  # whichever PUT landed last; both list the same files
    listed = {f["name"]: f for f in manifest["files"]}
    assert sorted(listed) == sorted(SCENE_FILES)
    for name, data in contents.items():
        held = s3.get_object(Bucket=bucket, Key=prefix + name)["Body"].read()
        assert held == data and listed[name]["sha256"] == hashlib.sha256(data).hexdigest()

    for name in ALL_FILES:
        found = await convex.query("assets:getByKey", {"bucket": bucket, "key": prefix + name})
        assert found is not None and found["status"] == "available", (name, found)
        assert found["upload"]["runId"] == later, name  # the later run wins, whatever landed last
        assert found["upload"]["status"] == "available"
        if name != "manifest.json":  # what Convex records is what the manifest says
            expected = listed[name]["s3Checksum"]
            if expected is not None:
                assert found["checksums"]["sha256"] == expected["value"], name
    session = await convex.query("sessions:get", {"sessionId": session_id})
    summary = session["summary"]
    assert (summary["filesDone"], summary["filesTotal"], summary["failed"]) == (
        len(ALL_FILES), len(ALL_FILES), 0)  # each file once, not once per run
    assert summary["bytesDone"] == summary["bytesTotal"]
    assert session["runId"] == later and session["ownerId"] == "alice"
    scene = await convex.query("sessions:scene", {"sessionId": session_id, "sceneId": "scene"})
    assert [(u["version"], u["runId"], u["manifest"]["key"]) for u in scene["uploads"]] == [
        (1, later, prefix + "manifest.json")]
