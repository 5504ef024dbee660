"""S3 faults below botocore: a loopback proxy between the storage's S3 client and moto (or
LocalStack) answers ``503 SlowDown`` — S3's throttling answer — to chosen PUT / UploadPart
requests, so botocore's own retries, then the uploader's, meet a real HTTP answer on a real
socket (tests/test_storage.py injects above botocore, on the mapped client)."""

from __future__ import annotations

import uuid
from pathlib import Path

from s3convex.adapters.convex import ConvexClient
from s3convex.storage import ConvexStatusSink, S3Storage
from tests.backends import AwsResources
from tests.storage_support import (
    SCENE_FILES,
    FaultProxy,
    RecordingSink,
    make_scene,
    open_s3,
    settings_for,
)


async def test_503s_are_retried_a_file_that_keeps_failing_is_failed_and_retry_failed_completes_it(
        aws_resources: AwsResources, bucket: str, convex: ConvexClient, tmp_path: Path) -> None:
    session_id = f"f-{uuid.uuid4().hex[:10]}"
    contents = make_scene(tmp_path / "scene")
    broken = {"scene.py": True}
    part_two_faults: list[int] = []

    def fault(method: str, path: str, query: dict[str, str]) -> bool:
        if method != "PUT":
            return False
        if path.endswith("/video.mp4") and query.get("partNumber") == "2" and len(
                part_two_faults) < 2:
            part_two_faults.append(1)  # twice: botocore's third try passes
            return True
        return path.endswith("/scene.py") and "uploadId" not in query and broken["scene.py"]

    async with FaultProxy(aws_resources.endpoint_url, fault) as proxy:
        aws, upload, _ = settings_for(bucket, proxy.url, S3_UPLOAD_ATTEMPTS="2")
        sink = RecordingSink(ConvexStatusSink(convex))
        prefix = f"sessions/{session_id}/scenes/scene/v1/"
        async with open_s3(aws, upload) as clients, S3Storage(
                aws, upload, sink=sink, s3=clients.s3) as store:
            # Requests botocore makes of one call, the first included, as it reads its config.
            per_call = clients.s3.meta.config.retries["total_max_attempts"]
            result = await store.upload_dir(tmp_path / "scene", session_id, "scene", 1)

            (failed,) = result.failed
            assert (failed.file.name, failed.retryable, failed.attempt) == ("scene.py", True, 2)
            assert "SlowDown (HTTP 503)" in failed.error and "reduce your request rate" in (
                failed.error)
            assert result.manifest is None  # not complete: no manifest
            assert sorted(u.file.name for u in result.uploaded) == sorted(
                set(SCENE_FILES) - {"scene.py"})
            video = next(u for u in result.uploaded if u.file.name == "video.mp4")
            assert video.attempt == 1 and len(part_two_faults) == 2  # botocore retried the part
            # Every try of the failing file reached the socket: our attempts × botocore's.
            assert proxy.count(503, "/scene.py") == 2 * per_call > 2
            broken_record = await convex.query("assets:getByKey", {
                "bucket": bucket, "key": prefix + "scene.py"})
            assert broken_record["status"] == "failed" and "SlowDown" in broken_record["error"]
            assert broken_record["upload"]["attempt"] == 2
            retried_before = [u for u in sink.updates_for(prefix + "scene.py")
                              if u["status"] == "failed"]
            assert retried_before[0]["attempt"] == 1 and "nextRetryAt" in retried_before[0]
            for name in set(SCENE_FILES) - {"scene.py"}:
                found = await convex.query("assets:getByKey", {"bucket": bucket,
                                                               "key": prefix + name})
                assert found["status"] == "available", (name, found["status"])

            broken["scene.py"] = False  # S3 calms down
            sent_before = len(proxy.seen)
            again = await store.retry_failed(result)
        assert again.ok and not again.failed and again.run_id == result.run_id
        fixed = next(u for u in again.uploaded if u.file.name == "scene.py")
        assert fixed.attempt == 3
        # Only the failed file and then the manifest went out again.
        resent = {s.path.rsplit("/", 1)[-1] for s in proxy.seen[sent_before:] if s.method == "PUT"}
        assert resent == {"scene.py", "manifest.json"}
    s3 = aws_resources.client("s3")
    assert s3.get_object(Bucket=bucket, Key=prefix + "scene.py")["Body"].read() == contents[
        "scene.py"]
    found = await convex.query("assets:getByKey", {"bucket": bucket, "key": prefix + "scene.py"})
    assert (found["status"], found["upload"]["attempt"]) == ("available", 3)
    scene = await convex.query("sessions:scene", {"sessionId": session_id, "sceneId": "scene"})
    assert scene["uploads"][0]["manifest"]["key"] == prefix + "manifest.json"
