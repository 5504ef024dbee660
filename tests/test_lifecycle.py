"""The operator's side of the lifecycle as real processes: ``s3convex sessions delete|status|
restore``, and every "gone" path — ``s3convex url get`` exits 1 saying why, ``assets show``
shows the tombstone with its history, a missing file is never handed out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s3convex", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


async def seeded(aws_resources: Any, convex: Any, convex_server: Any) -> tuple[dict[str, str], str, str]:
    s3 = aws_resources.client("s3")
    s3.create_bucket(Bucket=aws_resources.bucket)
    session = f"l-{uuid.uuid4().hex[:8]}"
    key = f"sessions/{session}/scenes/a/v1/video.mp4"
    etag = s3.put_object(Bucket=aws_resources.bucket, Key=key, Body=b"video")["ETag"].strip('"')
    await convex.mutation("assets:applyEvents", {"events": [{
        "type": "created", "bucket": aws_resources.bucket, "key": key, "eventName": "ObjectCreated:Put",
        "eventTime": int(time.time() * 1000), "size": 5, "etag": etag, "sessionId": session,
        "sceneId": "a", "version": 1, "kind": "video"}]})
    await convex.mutation("access:setOwner", {"sessionId": session, "ownerId": "alice", "actor": "test"})
    env = {**aws_resources.env, "CONVEX_URL": convex_server.url, "CONVEX_DEPLOY_KEY": convex_server.admin_key}
    return env, session, key


async def test_sessions_commands_and_the_gone_paths(aws_resources, convex, convex_server) -> None:
    env, session, key = await seeded(aws_resources, convex, convex_server)
    assert cli(env, "url", "get", key, "--as", "alice").returncode == 0

    deleted = cli(env, "sessions", "delete", session, "--reason", "customer request", "--grace", "3600")
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)["state"] == "pending"
    status = json.loads(cli(env, "sessions", "status", session).stdout)
    assert (status["pending"], status["deleteReason"]) == (1, "customer request")

    gone = cli(env, "url", "get", key, "--as", "alice")
    assert gone.returncode == 1 and gone.stdout == ""
    assert "gone" in gone.stderr and "customer request" in gone.stderr

    restored = cli(env, "sessions", "restore", session)
    assert restored.returncode == 0 and json.loads(restored.stdout)["state"] == "restored"
    assert cli(env, "url", "get", key, "--as", "alice").returncode == 0

    cli(env, "sessions", "delete", session, "--reason", "customer request", "--grace", "0")
    cleaned = cli(env, "cleanup", "--session", session)
    assert json.loads(cleaned.stdout)["deleted"] == 1, cleaned.stderr
    shown = json.loads(cli(env, "assets", "show", f"{aws_resources.bucket}/{key}").stdout)
    assert shown["record"]["status"] == "deleted"
    assert shown["record"]["deleteReason"] == "customer request"
    assert [row["eventName"] for row in shown["history"]] == ["s3convex:Cleanup", "ObjectCreated:Put"]
    after = cli(env, "url", "get", key, "--as", "alice")
    assert after.returncode == 1 and "customer request" in after.stderr
    assert cli(env, "sessions", "restore", session).returncode == 1  # the grace is over

    listed = json.loads(cli(env, "assets", "list", "--session", session, "--status", "deleted").stdout)
    assert [r["key"] for r in listed["items"]] == [key]


async def test_a_missing_file_is_never_handed_out(aws_resources, convex, convex_server) -> None:
    env, _, key = await seeded(aws_resources, convex, convex_server)
    assert await convex.mutation("lifecycle:markMissing", {
        "bucket": aws_resources.bucket, "key": key, "seenAt": 1_700_000_000_000}) == "missing"
    refused = cli(env, "url", "get", key, "--as", "alice")
    assert refused.returncode == 1 and "missing from S3 since 2023-11-14" in refused.stderr


def test_infra_up_keeps_the_s3_lifecycle_rules(aws_resources, monkeypatch) -> None:
    from s3convex.infra.desired import load_infra_settings
    from s3convex.infra.provision import Provisioner

    monkeypatch.setenv("S3_ABORT_MULTIPART_DAYS", "7")
    monkeypatch.setenv("S3_NONCURRENT_VERSION_DAYS", "30")
    s3 = aws_resources.client("s3")
    s3.create_bucket(Bucket=aws_resources.bucket)
    s3.put_bucket_versioning(Bucket=aws_resources.bucket, VersioningConfiguration={"Status": "Enabled"})
    theirs = {"ID": "theirs", "Status": "Enabled", "Filter": {"Prefix": "tmp/"},
              "Expiration": {"Days": 1}}
    s3.put_bucket_lifecycle_configuration(Bucket=aws_resources.bucket,
                                          LifecycleConfiguration={"Rules": [theirs]})
    provisioner = Provisioner.from_settings(load_infra_settings())
    report = provisioner.up()
    assert {s.resource: s.action for s in report.plan.steps}["lifecycle"] == "create"
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=aws_resources.bucket)["Rules"]}
    assert set(rules) == {"theirs", "s3convex-abort-multipart", "s3convex-noncurrent"}
    assert rules["s3convex-abort-multipart"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert rules["s3convex-noncurrent"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    again = provisioner.status()
    assert {s.resource: s.action for s in again.steps}["lifecycle"] == "none"
