"""The upload engine's signing shortcut (s3convex.storage.body, "Signing"): a body whose SHA-256
travels in a signed ``x-amz-checksum-sha256`` header is sent as ``UNSIGNED-PAYLOAD`` instead of
being hashed a second time; anything else is signed as botocore signs it. Against moto (or
LocalStack), which must take both kinds of request."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

from s3convex.storage import S3Storage
from tests.backends import AwsResources
from tests.storage_support import MiB, RecordingSink, settings_for


def _scene(folder: Path) -> dict[str, bytes]:
    folder.mkdir()
    contents = {"scene.py": os.urandom(2000), "video.mp4": os.urandom(11 * MiB)}  # 3 parts
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    return contents


async def _upload(aws_resources: AwsResources, folder: Path, checksum: str,
                  ) -> tuple[list[tuple[str, str, str]], Any]:
    """Every request the storage sent: (operation, x-amz-content-sha256, signed headers)."""
    aws, upload, _ = settings_for(aws_resources.bucket, aws_resources.endpoint_url,
                                  S3_UPLOAD_CHECKSUM=checksum)
    sent: list[tuple[str, str, str]] = []

    def seen(request: Any, event_name: str, **_: Any) -> None:
        authorization = request.headers["Authorization"]
        authorization = authorization.decode() if isinstance(authorization, bytes) else authorization
        signed = authorization.split("SignedHeaders=")[1].split(",")[0]
        payload = request.headers["X-Amz-Content-SHA256"]
        sent.append((event_name.rsplit(".", 1)[-1],
                     payload.decode() if isinstance(payload, bytes) else payload, signed))

    async with S3Storage(aws, upload, sink=RecordingSink()) as store:
        store._opened_transfer()._s3.meta.events.register("before-send.s3", seen)
        result = await store.upload_dir(folder, f"s-{uuid.uuid4().hex[:8]}", "x", 1)
    return sent, result


async def test_a_body_with_our_sha256_is_not_hashed_again_for_the_signature(
        aws_resources: AwsResources, bucket: str, tmp_path: Path) -> None:
    contents = _scene(tmp_path / "scene")
    sent, result = await _upload(aws_resources, tmp_path / "scene", "sha256")
    assert result.ok
    bodies = [s for s in sent if s[0] in ("PutObject", "UploadPart")]
    assert len(bodies) == 1 + 3 + 1  # scene.py, the video's parts, the manifest
    for _, payload, signed in bodies:
        assert payload == "UNSIGNED-PAYLOAD"
        assert "x-amz-checksum-sha256" in signed.split(";")  # what S3 checks the bytes against
    others = [s for s in sent if s[0] not in ("PutObject", "UploadPart")]
    assert others and all(payload != "UNSIGNED-PAYLOAD" for _, payload, _ in others)
    by_name = {u.file.name: u for u in result.uploaded}
    for name, data in contents.items():
        assert by_name[name].sha256_hex == hashlib.sha256(data).hexdigest()
        body = aws_resources.client("s3").get_object(Bucket=bucket, Key=by_name[name].key)["Body"]
        assert body.read() == data


async def test_without_our_checksum_the_body_is_signed_as_botocore_signs_it(
        aws_resources: AwsResources, bucket: str, tmp_path: Path) -> None:
    contents = _scene(tmp_path / "scene")
    sent, result = await _upload(aws_resources, tmp_path / "scene", "none")
    assert result.ok
    put = next(s for s in sent if s[0] == "PutObject")
    assert put[1] == hashlib.sha256(contents["scene.py"]).hexdigest()
    assert all(payload != "UNSIGNED-PAYLOAD" for _, payload, _ in sent)
