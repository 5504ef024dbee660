"""The video-tutor asset model end to end: S3 (moto or LocalStack) → daemon → local Convex.

Scenes and versions, stored URLs in both modes (and that they really download), the refresher,
metadata and checksums. Run on both backends: ``pytest -m e2e`` and ``--backend=localstack``;
the refusal of expired or tampered presigned URLs is only observable on LocalStack (started
with ``S3_SKIP_SIGNATURE_VALIDATION=0``): moto serves any presigned URL (measured).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from s3convex.adapters.aws import open_clients
from s3convex.adapters.urls import url_source
from s3convex.consumer.url_refresh import UrlRefresher
from tests.stack import Stack

pytestmark = pytest.mark.e2e

AWKWARD = ["my video (final).mp4", "ünïcödé – 東京.py", "a+b=c&d.json", "100% done.webm"]


def session_of(stack: Stack) -> str:
    # The local Convex server lives for the whole run: sessions must not meet across tests.
    return f"{stack.resources.prefix} session"


def scene_key(stack: Stack, scene: str, version: int, name: str) -> str:
    return f"sessions/{session_of(stack)}/scenes/{scene}/v{version}/{name}"


async def fetch(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url)


def render(stack: Stack, scene: str, version: int) -> dict[str, bytes]:
    """Upload one render of a scene: video, its generated source, metadata and the manifest."""
    files = {
        "video.mp4": f"video v{version}".encode() * 100,
        "scene.py": f"class Scene{version}: ...\n".encode(),
        "render.json": json.dumps({"fps": 30, "version": version}).encode(),
        "manifest.json": json.dumps({"files": ["video.mp4", "scene.py"]}).encode(),
    }
    types = {"mp4": "video/mp4", "py": "text/x-python", "json": "application/json"}
    for name, body in files.items():
        stack.put(scene_key(stack, scene, version, name), body, ContentType=types[name.rsplit(".", 1)[1]],
                  ChecksumAlgorithm="SHA256", Metadata={"render": f"v{version}"})
    return files


async def scene(stack: Stack, scene_id: str) -> dict[str, Any]:
    return await stack.convex.query("sessions:scene", {"sessionId": session_of(stack), "sceneId": scene_id})


async def test_scene_rendered_v1_then_v2_points_at_v2_with_v1_in_history(stack: Stack) -> None:
    v1 = render(stack, "intro", 1)
    await stack.wait_for_depth(len(v1))
    assert await stack.drain() == 0
    first = await scene(stack, "intro")
    assert first["currentVersion"] == 1

    v2 = render(stack, "intro", 2)
    await stack.wait_for_depth(len(v2))
    assert await stack.drain() == 0

    current = await scene(stack, "intro")
    assert current["currentVersion"] == 2
    assert set(current["files"]) == {"video", "source", "metadata", "manifest"}
    for kind, name in [("video", "video.mp4"), ("source", "scene.py"), ("metadata", "render.json"),
                       ("manifest", "manifest.json")]:
        pointer = current["files"][kind]
        assert pointer["key"] == scene_key(stack, "intro", 2, name)
        response = await fetch(pointer["url"])
        assert response.status_code == 200 and response.content == v2[name], kind
    v1_entry, v2_entry = current["versions"]
    assert (v1_entry["version"], v2_entry["version"]) == (1, 2)
    assert v1_entry["firstSeenAt"] <= v1_entry["lastSeenAt"] <= v2_entry["firstSeenAt"] <= v2_entry["lastSeenAt"]

    history = await stack.convex.query("sessions:versionFiles", {
        "sessionId": session_of(stack), "sceneId": "intro", "version": 1})
    assert sorted(a["key"].rsplit("/", 1)[1] for a in history) == sorted(v1)
    for asset in history:
        name = asset["key"].rsplit("/", 1)[1]
        assert asset["status"] == "available"
        assert (await fetch(asset["url"])).content == v1[name]

    session = await stack.convex.query("sessions:get", {"sessionId": session_of(stack)})
    assert session["summary"] | {"lastEventAt": None} == {
        "available": 8, "deleted": 0, "failed": 0, "pending": 0, "uploading": 0,
        "cleanup_pending": 0, "cleanup_failed": 0, "missing": 0,
        "bytes": sum(map(len, v1.values())) + sum(map(len, v2.values())),
        "byKind": {"video": 2, "source": 2, "metadata": 2, "manifest": 2},
        "scenes": 1, "lastEventAt": None,
        # Upload progress counts only what the uploader (S3Storage) reported; these came from
        # S3 events alone.
        "filesDone": 0, "filesTotal": 0, "bytesDone": 0, "bytesTotal": 0,
    }

    video = await stack.record(scene_key(stack, "intro", 2, "video.mp4"))
    assert (video["sessionId"], video["sceneId"], video["version"], video["kind"]) == (
        session_of(stack), "intro", 2, "video")
    assert video["checksums"]["sha256"] == base64.b64encode(
        hashlib.sha256(v2["video.mp4"]).digest()).decode()
    assert video["metadata"] == {"render": "v2"}
    assert video["etagKind"] == "md5"
    assert video["contentType"] == "video/mp4"


async def test_outside_the_layout_is_tracked_without_a_session(stack: Stack) -> None:
    stack.put("loose/clip.mp4", b"loose")
    stack.put(f"sessions/{session_of(stack)}/notes.vtt", b"WEBVTT")
    await stack.wait_for_depth(2)
    assert await stack.drain() == 0
    loose = await stack.record("loose/clip.mp4")
    assert loose["status"] == "available" and loose["kind"] == "other"
    assert "sessionId" not in loose
    session = await stack.convex.query("sessions:get", {"sessionId": session_of(stack)})
    assert session["summary"]["byKind"] == {"subtitle": 1}
    assert session["summary"]["scenes"] == 0


async def test_removing_the_current_version_falls_back_and_counts(stack: Stack) -> None:
    render(stack, "outro", 1)
    v2 = render(stack, "outro", 2)
    await stack.wait_for_depth(8)
    assert await stack.drain() == 0
    stack.s3.delete_objects(Bucket=stack.bucket, Delete={"Objects": [
        {"Key": scene_key(stack, "outro", 2, name)} for name in v2]})
    await stack.wait_for_depth(len(v2))
    assert await stack.drain() == 0

    current = await scene(stack, "outro")
    assert current["currentVersion"] == 1
    assert all("/v1/" in pointer["key"] for pointer in current["files"].values())
    summary = (await stack.convex.query("sessions:get", {"sessionId": session_of(stack)}))["summary"]
    assert (summary["available"], summary["deleted"]) == (4, 4)


async def test_multipart_upload_is_recorded_as_multipart(stack: Stack) -> None:
    key = scene_key(stack, "big", 1, "video.mp4")
    part = b"p" * (5 * 1024 * 1024)
    upload = stack.s3.create_multipart_upload(Bucket=stack.bucket, Key=key, ContentType="video/mp4")
    parts = []
    for number in (1, 2, 3):
        answer = stack.s3.upload_part(Bucket=stack.bucket, Key=key, PartNumber=number,
                                      UploadId=upload["UploadId"], Body=part)
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})
    stack.s3.complete_multipart_upload(Bucket=stack.bucket, Key=key, UploadId=upload["UploadId"],
                                       MultipartUpload={"Parts": parts})
    await stack.wait_for_depth(1)
    assert await stack.drain() == 0

    record = await stack.record(key)
    assert record["etag"].endswith("-3")
    assert record["etagKind"] == "multipart"
    assert record["size"] == 3 * len(part)
    assert (await scene(stack, "big"))["files"]["video"]["size"] == 3 * len(part)


async def test_metadata_versions_storage_class_and_encryption(stack: Stack) -> None:
    stack.s3.put_bucket_versioning(Bucket=stack.bucket, VersioningConfiguration={"Status": "Enabled"})
    kms_key = "arn:aws:kms:us-east-1:000000000000:key/0c1c2f8e-0000-4000-8000-000000000001"
    aes = scene_key(stack, "enc", 1, "render.json")
    kms = scene_key(stack, "enc", 1, "video.mp4")
    put_aes = stack.put(aes, b"{}", ServerSideEncryption="AES256", StorageClass="STANDARD_IA",
                        ChecksumAlgorithm="CRC32", Metadata={"scene": "enc"})
    stack.put(kms, b"kms body", ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key)
    await stack.wait_for_depth(2)
    assert await stack.drain() == 0

    record = await stack.record(aes)
    assert record["versionId"] == put_aes["VersionId"]
    assert record["storageClass"] == "STANDARD_IA"
    assert record["encryption"] == {"sse": "AES256"}
    assert record["checksums"] == {"crc32": put_aes["ChecksumCRC32"]}
    assert record["metadata"] == {"scene": "enc"}
    assert record["etagKind"] == "md5"
    encrypted = await stack.record(kms)
    assert encrypted["encryption"] == {"sse": "aws:kms", "kmsKeyId": kms_key}
    # Under SSE-KMS the ETag is not the content's MD5.
    assert encrypted["etagKind"] == "unknown"


# --- URLs -------------------------------------------------------------------------------------


async def test_presigned_urls_download_the_object_for_awkward_keys(stack: Stack) -> None:
    keys = [scene_key(stack, "odd scene ü", 1, name) for name in AWKWARD] + ["loose/ä b+c.mp4"]
    for key in keys:
        stack.put(key, key.encode())
    await stack.wait_for_depth(len(keys))
    assert await stack.drain(s3_presign_expires=900) == 0
    for key in keys:
        record = await stack.record(key)
        assert "X-Amz-Signature=" in record["url"] and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in record["url"]
        assert abs(record["urlExpiresAt"] - (time.time() + 900) * 1000) < 60_000
        response = await fetch(record["url"])
        assert response.status_code == 200, key
        assert response.content == key.encode()


async def test_expired_or_tampered_presigned_urls_are_refused(stack: Stack, aws_backend: str) -> None:
    if aws_backend != "localstack":
        pytest.skip("moto serves any presigned URL, expired or tampered (measured); LocalStack "
                    "started with S3_SKIP_SIGNATURE_VALIDATION=0 checks them")
    key = scene_key(stack, "sig", 1, "my video ü.mp4")
    stack.put(key, b"signed body")
    await stack.wait_for_depth(1)
    # Long enough to download it first on a loaded machine; then we wait for it to expire.
    assert await stack.drain(s3_presign_expires=10) == 0
    record = await stack.record(key)
    assert (await fetch(record["url"])).content == b"signed body"
    tampered = _with_query(record["url"], **{"X-Amz-Signature": "0" * 64})
    assert (await fetch(tampered)).status_code == 403
    other_key = _with_path(record["url"], key.replace("video", "audio"))
    assert (await fetch(other_key)).status_code == 403
    await asyncio.sleep(max(0.0, record["urlExpiresAt"] / 1000 - time.time()) + 1.5)
    assert (await fetch(record["url"])).status_code == 403


async def test_public_base_urls_are_percent_encoded_and_work(stack: Stack) -> None:
    # S3 itself stands in for the CDN: a public-read bucket, addressed path-style.
    stack.s3.put_bucket_policy(Bucket=stack.bucket, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                       "Resource": f"arn:aws:s3:::{stack.bucket}/*"}]}))
    base = f"{stack.resources.endpoint_url}/{stack.bucket}/"
    keys = [scene_key(stack, "pub", 1, name) for name in AWKWARD]
    for key in keys:
        stack.put(key, key.encode())
    await stack.wait_for_depth(len(keys))
    assert await stack.drain(s3_public_base_url=base) == 0
    for key in keys:
        record = await stack.record(key)
        assert record["url"].startswith(base) and "X-Amz" not in record["url"]
        assert " " not in record["url"] and record["url"].isascii()
        assert "urlExpiresAt" not in record
        response = await fetch(record["url"])
        assert response.status_code == 200 and response.content == key.encode(), key
    # Nothing for the refresher to do: public URLs do not expire.
    settings = stack.settings(s3_public_base_url=base)
    async with open_clients(settings.aws) as aws:
        report = await UrlRefresher(stack.convex, url_source(settings.urls, aws), [stack.bucket],
                                    margin_s=10 * 86400, interval_s=60).refresh_once()
    assert report.scanned == 0


async def test_refresher_re_signs_expiring_urls_and_leaves_deleted_assets_alone(stack: Stack) -> None:
    keys = [scene_key(stack, "refresh", 1, name) for name in ("video.mp4", "scene.py", "gone.json")]
    for key in keys:
        stack.put(key, key.encode())
    await stack.wait_for_depth(len(keys))
    assert await stack.drain(s3_presign_expires=120) == 0
    stack.s3.delete_object(Bucket=stack.bucket, Key=keys[2])
    await stack.wait_for_depth(1)
    assert await stack.drain() == 0
    before = {key: await stack.record(key) for key in keys}

    settings = stack.settings(s3_presign_expires=3600)
    async with open_clients(settings.aws) as aws:
        refresher = UrlRefresher(stack.convex, url_source(settings.urls, aws), [stack.bucket],
                                 margin_s=600, interval_s=60, page_size=1)
        report = await refresher.refresh_once()
        again = await refresher.refresh_once()

    # Pages of one row; the deleted asset is not even listed.
    assert (report.scanned, report.stored, again.scanned) == (2, 2, 0)
    for key in keys[:2]:
        record = await stack.record(key)
        assert record["urlExpiresAt"] > before[key]["urlExpiresAt"] + 3_000_000
        assert record["url"] != before[key]["url"]
        assert (await fetch(record["url"])).content == key.encode()
        assert record["revision"] == before[key]["revision"]  # not an event: URL fields only
    gone = await stack.record(keys[2])
    assert gone["status"] == "deleted" and "url" not in gone
    assert (await scene(stack, "refresh"))["files"]["video"]["url"] == (await stack.record(keys[0]))["url"]


async def test_the_daemon_runs_the_refresher(stack: Stack, tmp_path: Path) -> None:
    key = scene_key(stack, "daemon", 1, "video.mp4")
    log_path = tmp_path / "daemon.log"
    daemon = stack.spawn(log_path=log_path, extra_env={
        "S3_PRESIGN_EXPIRES": "4", "URL_REFRESH_INTERVAL": "1"})  # margin: 2 s
    try:
        stack.put(key, b"refresh me")
        first = await _wait_for(lambda: stack.record(key), lambda r: r is not None and "url" in r)
        refreshed = await _wait_for(lambda: stack.record(key),
                                    lambda r: r["urlExpiresAt"] > first["urlExpiresAt"], timeout=20)
        assert refreshed["url"] != first["url"]
        assert (await fetch(refreshed["url"])).content == b"refresh me"
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
    assert code == 0, log_path.read_text()[-3000:]
    assert any(json.loads(line).get("msg") == "urls refreshed"
               for line in log_path.read_text().splitlines() if line.startswith("{"))


async def _wait_for(read, done, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"timed out; last value {value!r}"
        await asyncio.sleep(0.2)


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True)) | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


def _with_path(url: str, key: str) -> str:
    from urllib.parse import quote

    parts = urlsplit(url)
    bucket = parts.path.split("/")[1]
    return urlunsplit(parts._replace(path=f"/{bucket}/" + quote(key)))
