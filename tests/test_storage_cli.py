"""``s3convex upload`` as a real process: JSON when piped, a table on a terminal, and its exit
codes — 0 uploaded, 1 a file failed (listed) or cannot be read, 2 a usage error — with the
checks done before anything is uploaded."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from convex_local.launcher import LocalConvex
from s3convex.adapters.convex import ConvexClient
from tests.backends import AwsResources
from tests.ops_support import run_cli, run_cli_on_a_terminal
from tests.storage_support import SCENE_FILES, TEST_UPLOAD, MiB, make_scene


@dataclass
class _Env:
    env: dict[str, str]


@pytest.fixture
def cli_env(aws_resources: AwsResources, convex_server: LocalConvex) -> _Env:
    aws_resources.client("s3").create_bucket(Bucket=aws_resources.bucket)
    return _Env({**aws_resources.env, **TEST_UPLOAD, "CONVEX_URL": convex_server.url,
                 "CONVEX_DEPLOY_KEY": convex_server.admin_key, "LOG_LEVEL": "WARNING"})


async def test_upload_prints_json_when_piped_and_the_records_are_in_convex(
        cli_env: _Env, aws_resources: AwsResources, convex: ConvexClient, tmp_path: Path) -> None:
    make_scene(tmp_path / "intro", video_bytes=6 * MiB)
    done = await run_cli(cli_env, "upload", str(tmp_path / "intro"), "--session", "cli-s1",
                         "--scene", "intro", "--version", "2", "--owner", "alice")
    assert done.code == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["ok"] is True and document["uploaded"] == len(SCENE_FILES)
    assert document["manifest"] == "sessions/cli-s1/scenes/intro/v2/manifest.json"
    video = next(f for f in document["files"] if f["name"] == "video.mp4")
    assert (video["parts"], video["checksumType"]) == (2, "COMPOSITE")
    assert isinstance(video["size"], int)
    found = await convex.query("assets:getByKey", {"bucket": aws_resources.bucket,
                                                   "key": video["key"]})
    assert found["status"] == "available" and found["upload"]["runId"] == document["runId"]
    session = await convex.query("sessions:get", {"sessionId": "cli-s1"})
    assert session["ownerId"] == "alice"


async def test_upload_on_a_terminal_prints_a_summary_table(
        cli_env: _Env, tmp_path: Path) -> None:
    make_scene(tmp_path / "intro", video_bytes=MiB)
    done = await run_cli_on_a_terminal(cli_env, "upload", str(tmp_path / "intro"), "--session",
                                       "cli-s2", "--scene", "intro", "--version", "1")
    assert done.code == 0, done.stderr
    assert "video.mp4" in done.stdout and "available" in done.stdout
    assert "5 uploaded, 0 failed" in done.stdout and not done.stdout.lstrip().startswith("{")


@pytest.mark.parametrize(("args", "message"), [
    (("--session", "a/b", "--scene", "x", "--version", "1"), "one non-empty key segment"),
    (("--session", "s", "--scene", "x", "--version", "-1"), "--version"),
    (("--session", "s", "--scene", "x"), "--version"),
])
async def test_usage_errors_exit_2_before_anything_is_uploaded(
        cli_env: _Env, aws_resources: AwsResources, tmp_path: Path, args: tuple[str, ...],
        message: str) -> None:
    make_scene(tmp_path / "intro", video_bytes=MiB)
    done = await run_cli(cli_env, "upload", str(tmp_path / "intro"), *args)
    assert done.code == 2, (done.stdout, done.stderr)
    assert message in done.stderr and "Traceback" not in done.stderr
    assert "Contents" not in aws_resources.client("s3").list_objects_v2(Bucket=aws_resources.bucket)


async def test_a_missing_directory_is_a_usage_error(cli_env: _Env, tmp_path: Path) -> None:
    done = await run_cli(cli_env, "upload", str(tmp_path / "nowhere"), "--session", "s",
                         "--scene", "x", "--version", "1")
    assert done.code == 2 and "does not exist" in done.stderr, done.stderr


async def test_an_unreadable_file_exits_1_before_anything_is_uploaded(
        cli_env: _Env, aws_resources: AwsResources, tmp_path: Path) -> None:
    make_scene(tmp_path / "intro", video_bytes=MiB)
    os.mkfifo(tmp_path / "intro" / "extra.vtt")  # not a file that can be read through
    done = await run_cli(cli_env, "upload", str(tmp_path / "intro"), "--session", "s", "--scene",
                         "x", "--version", "1")
    assert done.code == 1, (done.stdout, done.stderr)
    assert "s3convex: error: nothing was uploaded: 1 problem: extra.vtt: not a regular file" in (
        done.stderr)
    assert "Contents" not in aws_resources.client("s3").list_objects_v2(Bucket=aws_resources.bucket)


async def test_failed_files_are_listed_and_exit_1(cli_env: _Env, tmp_path: Path) -> None:
    make_scene(tmp_path / "intro", video_bytes=MiB)
    env = _Env({**cli_env.env, "S3_BUCKET": cli_env.env["S3_BUCKET"] + "-missing"})
    done = await run_cli(env, "upload", str(tmp_path / "intro"), "--session", "cli-s3",
                         "--scene", "intro", "--version", "1")
    assert done.code == 1, (done.stdout, done.stderr)
    document = json.loads(done.stdout)
    assert document["failed"] == len(SCENE_FILES) and document["manifest"] is None
    assert "s3convex: error: 5 of 5 files failed" in done.stderr
    for name in SCENE_FILES:
        assert f"  {name}: PutObject " in done.stderr or f"  {name}: CreateMultipartUpload" in (
            done.stderr)
    assert "NoSuchBucket" in done.stderr
