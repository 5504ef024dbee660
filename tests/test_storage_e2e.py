"""End to end (``-m e2e``; run on LocalStack with ``--backend=localstack``): S3Storage on the
store whose checksum handling differs from moto's — LocalStack verifies every SHA-256 and
computes composite checksums — in every combination of our checksum setting and botocore's
default checksums; a checksum refusal; and the daemon reading the uploaded keys as the uploader
laid them out, without changing what the uploader recorded."""

from __future__ import annotations

import base64
import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from s3convex.adapters.convex import ConvexClient
from s3convex.storage import ConvexStatusSink, S3Storage
from s3convex.storage.errors import CHECKSUM_HINT
from tests.backends import AwsResources
from tests.stack import Stack
from tests.storage_support import SCENE_FILES, MiB, RecordingSink, make_scene, settings_for

pytestmark = pytest.mark.e2e


def _b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.mark.parametrize("checksum", ["sha256", "none"])
@pytest.mark.parametrize("calculation", ["when_supported", "when_required"])
async def test_every_checksum_setting_round_trips_the_bytes(
        aws_resources: AwsResources, aws_backend: str, bucket: str, convex: ConvexClient,
        tmp_path: Path, checksum: str, calculation: str) -> None:
    """S3-compatible stores have stored the aws-chunked trailer in the body and refused the
    SDK's own CRCs on multipart completion: every object must come back byte for byte."""
    contents = make_scene(tmp_path / "scene")
    session = f"e2e-{uuid.uuid4().hex[:8]}"
    aws, upload, _ = settings_for(bucket, aws_resources.endpoint_url, S3_UPLOAD_CHECKSUM=checksum,
                                  AWS_REQUEST_CHECKSUM_CALCULATION=calculation,
                                  AWS_RESPONSE_CHECKSUM_VALIDATION=calculation)
    async with S3Storage(aws, upload, sink=ConvexStatusSink(convex)) as store:
        result = await store.upload_dir(tmp_path / "scene", session, "scene", 1)
    assert result.ok, result.to_dict()
    s3 = aws_resources.client("s3")
    for uploaded in result.uploaded:
        data = contents[uploaded.file.name]
        assert s3.get_object(Bucket=bucket, Key=uploaded.key)["Body"].read() == data
        assert uploaded.sha256_hex == hashlib.sha256(data).hexdigest()
        head = s3.head_object(Bucket=bucket, Key=uploaded.key, ChecksumMode="ENABLED")
        if checksum == "sha256" and aws_backend == "localstack":  # moto keeps no composite
            assert head["ChecksumSHA256"] == uploaded.s3_checksum
            if uploaded.parts == 1:
                assert uploaded.s3_checksum == _b64(data)
            else:
                parts = [hashlib.sha256(data[i:i + 5 * MiB]).digest()
                         for i in range(0, len(data), 5 * MiB)]
                assert uploaded.s3_checksum == (base64.b64encode(
                    hashlib.sha256(b"".join(parts)).digest()).decode() + f"-{len(parts)}")
        found = await convex.query("assets:getByKey", {"bucket": bucket, "key": uploaded.key})
        assert found["status"] == "available"
        if aws_backend == "localstack":  # the record holds the checksums S3 holds, as S3 says them
            held = {name: head[field] for name, field in (("sha256", "ChecksumSHA256"),
                                                          ("crc64nvme", "ChecksumCRC64NVME"))
                    if head.get(field)}
            # botocore's default CRC32 (none + when_supported) is not a field uploads:report
            # takes: the record holds the file's SHA-256 until the daemon's HeadObject
            assert found["checksums"] == (held or {"sha256": uploaded.sha256_base64})


async def test_a_checksum_the_store_refuses_fails_the_file_at_once_with_what_to_do(
        aws_resources: AwsResources, aws_backend: str, bucket: str, convex: ConvexClient,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if aws_backend != "localstack":
        pytest.skip("moto does not verify checksums")
    from s3convex.storage import transfer

    real = transfer._read_part

    def wrong_digest_for_part_two(opener: Any, path: Path, offset: int, length: int,
                                  whole: Any) -> Any:
        body, digest = real(opener, path, offset, length, whole)
        if offset == 5 * MiB:  # what S3 will compute from the bytes differs from the header
            digest = hashlib.sha256(b"not these bytes").digest()
        return body, digest

    monkeypatch.setattr(transfer, "_read_part", wrong_digest_for_part_two)
    make_scene(tmp_path / "scene")
    sink = RecordingSink(ConvexStatusSink(convex))
    session = f"e2e-{uuid.uuid4().hex[:8]}"
    aws, upload, _ = settings_for(bucket, aws_resources.endpoint_url)
    async with S3Storage(aws, upload, sink=sink) as store:
        result = await store.upload_dir(tmp_path / "scene", session, "scene", 1)
    (failed,) = result.failed
    assert failed.file.name == "video.mp4" and failed.attempt == 1  # a refusal is not retried
    assert "BadDigest (HTTP 400)" in failed.error and CHECKSUM_HINT in failed.error
    assert not aws_resources.client("s3").list_multipart_uploads(Bucket=bucket).get("Uploads")
    record = await convex.query("assets:getByKey", {"bucket": bucket, "key": failed.key})
    assert record["status"] == "failed" and "BadDigest" in record["error"]


async def test_the_daemon_reads_the_uploaded_keys_as_the_uploader_laid_them_out(
        stack: Stack, aws_backend: str, tmp_path: Path) -> None:
    make_scene(tmp_path / "scene")
    session = f"e2e-{uuid.uuid4().hex[:8]}"
    settings = stack.settings(**{"S3_UPLOAD_MULTIPART_THRESHOLD": "5MiB",
                                 "S3_UPLOAD_PART_SIZE": "5MiB"})
    async with S3Storage.from_settings(settings) as store:
        await store.create_session(session, "alice")
        result = await store.upload_dir(tmp_path / "scene", session, "scene", 4)
    assert result.ok
    reported = {u.key: await stack.record(u.key) for u in (*result.uploaded, result.manifest)
                if u is not None}
    await stack.wait_for_depth(len(SCENE_FILES) + 1)
    assert await stack.drain() == 0
    for uploaded in (*result.uploaded, result.manifest):
        assert uploaded is not None
        found = await stack.record(uploaded.key)
        assert found is not None and found["revision"] >= 1, found  # the S3 event applied
        assert found["status"] == "available"
        assert (found["sessionId"], found["sceneId"], found["version"], found["kind"]) == (
            session, "scene", 4, uploaded.file.kind)
        assert found["upload"]["runId"] == result.run_id
        if aws_backend == "localstack":  # as S3 (moto drops a composite checksum's "-N")
            # what the uploader recorded is what the daemon read from S3: nothing flips
            assert found["checksums"]["sha256"] == reported[uploaded.key]["checksums"]["sha256"]
