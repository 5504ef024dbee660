"""The daemon end to end: real S3/SQS (moto or LocalStack) → consumer → the local Convex server.

Run on both backends: ``pytest -m e2e`` (moto) and ``pytest -m e2e --backend=localstack``.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from s3convex.consumer.ack import REASON_ATTRIBUTE
from tests.stack import AWKWARD_KEYS, Stack

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parent / "fixtures" / "events"


async def test_uploads_overwrites_and_deletes_land_exactly(stack: Stack) -> None:
    for key in AWKWARD_KEYS:
        stack.put(key, key.encode(), ContentType="text/plain", Metadata={"render": "r1"})
    await asyncio.sleep(0.01)
    overwritten = stack.put(AWKWARD_KEYS[0], b"a longer second version", ContentType="video/mp4")
    stack.s3.delete_object(Bucket=stack.bucket, Key=AWKWARD_KEYS[1])
    stack.s3.delete_objects(Bucket=stack.bucket, Delete={"Objects": [{"Key": AWKWARD_KEYS[2]},
                                                                     {"Key": AWKWARD_KEYS[3]}]})
    await stack.wait_for_depth(len(AWKWARD_KEYS) + 4)

    assert await stack.drain() == 0

    first = await stack.record(AWKWARD_KEYS[0])
    assert first["status"] == "available"
    assert first["size"] == len(b"a longer second version")
    assert first["etag"] == overwritten["ETag"].strip('"')
    assert first["etagKind"] == "md5"
    assert first["contentType"] == "video/mp4"
    for key in AWKWARD_KEYS[1:4]:
        record = await stack.record(key)
        assert record["status"] == "deleted", key
        assert record["deletedAt"] is not None
    for key in AWKWARD_KEYS[4:]:
        record = await stack.record(key)
        head = stack.head(key)
        assert record["status"] == "available", key
        assert record["size"] == head["ContentLength"] == len(key.encode())
        assert record["etag"] == head["ETag"].strip('"')
        assert record["metadata"] == {"render": "r1"}
        assert record["url"]
    history = await stack.history(AWKWARD_KEYS[0])
    # Newest first. The first write's event may be applied before the overwrite's, or arrive
    # after it and be stale (pollers run concurrently): either way the overwrite is on top.
    assert history[0]["etag"] == overwritten["ETag"].strip('"')
    assert {row["type"] for row in history} == {"created"} and 1 <= len(history) <= 2
    assert stack.depth() == {"visible": 0, "invisible": 0, "delayed": 0}
    assert stack.take_all(stack.dlq_url) == []


async def test_multipart_upload_is_recorded_as_multipart(stack: Stack) -> None:
    key = "renders/big video.mp4"
    part = b"p" * (5 * 1024 * 1024)
    upload = stack.s3.create_multipart_upload(Bucket=stack.bucket, Key=key, ContentType="video/mp4")
    parts = []
    for number in (1, 2):
        response = stack.s3.upload_part(Bucket=stack.bucket, Key=key, PartNumber=number,
                                        UploadId=upload["UploadId"], Body=part)
        parts.append({"PartNumber": number, "ETag": response["ETag"]})
    stack.s3.complete_multipart_upload(Bucket=stack.bucket, Key=key, UploadId=upload["UploadId"],
                                       MultipartUpload={"Parts": parts})
    await stack.wait_for_depth(2)  # the test event + the completion (moto adds a Put too)

    assert await stack.drain() == 0

    record = await stack.record(key)
    assert record["status"] == "available"
    assert record["size"] == 2 * len(part)
    assert record["etag"].endswith("-2")
    assert record["etagKind"] == "multipart"


async def test_poison_goes_to_dlq_with_reason_and_neighbours_land(stack: Stack) -> None:
    stack.put("good/one.txt", b"1")
    good = json.loads((FIXTURES / "s3-put.json").read_text())
    record = good["Records"][0]
    record["s3"]["bucket"]["name"] = stack.bucket
    record["s3"]["object"].update(key="good/two.txt", size=1)
    stack.put("good/two.txt", b"2")
    poison = {
        stack.send("this is not json"): "poison: body is not JSON",
        stack.send({"Records": [{"eventVersion": "2.1"}]}): "poison: invalid S3 notification",
        stack.send({**good, "Records": [{**record, "s3": {**record["s3"], "bucket": {"name": "elsewhere"}}}]}):
            "poison: bucket 'elsewhere' is not configured here",
        stack.send({**good, "Records": [{**record, "eventName": "ObjectRestore:Completed"}]}):
            "poison: no handler for event 'ObjectRestore:Completed'",
    }
    stack.send(good)  # a hand-written but valid notification: must land like the real ones
    await stack.wait_for_depth(len(poison) + 3)

    assert await stack.drain() == 0

    for key in ("good/one.txt", "good/two.txt"):
        assert (await stack.record(key))["status"] == "available"
    dead = stack.take_all(stack.dlq_url)
    reasons = {m["MessageAttributes"]["s3convex.source-message-id"]["StringValue"]:
               m["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"] for m in dead}
    assert set(reasons) == set(poison), [reasons[k] for k in set(reasons) - set(poison)]
    for message_id, expected in poison.items():
        assert reasons[message_id].startswith(expected)
    # Promptly, not after maxReceiveCount slow retries: each was received exactly once.
    assert all(m["MessageAttributes"]["s3convex.receive-count"]["StringValue"] == "1" for m in dead)
    assert stack.depth()["visible"] == 0


async def test_injected_convex_overload_loses_nothing(stack: Stack, convex_faults) -> None:
    keys = [f"overload/{i:03d}.txt" for i in range(40)]
    for key in keys:
        stack.put(key, key.encode())
    await stack.wait_for_depth(len(keys))
    convex_faults(rate503=0.3, rate429=0.1)

    assert await stack.drain(consumer_flush_events=5) == 0

    convex_faults()
    for key in keys:
        assert (await stack.record(key))["status"] == "available", key
    assert stack.take_all(stack.dlq_url) == []


async def test_duplicated_and_shuffled_events_on_two_daemons_converge(stack: Stack) -> None:
    keys = [f"race/{i}.bin" for i in range(12)]
    for round_ in range(3):
        for key in keys:
            stack.put(key, f"{key} round {round_}".encode() * (round_ + 1))
        await asyncio.sleep(0.005)  # emulators stamp eventTime in ms; keep rounds apart
    for key in keys[::3]:
        stack.s3.delete_object(Bucket=stack.bucket, Key=key)
    await stack.wait_for_depth(len(keys) * 3 + len(keys[::3]))
    bodies = [m["Body"] for m in stack.take_all()]
    replayed = bodies * 2
    random.Random(42).shuffle(replayed)
    for body in replayed:
        stack.send(body)

    results = await asyncio.gather(stack.drain(), stack.drain())

    assert results == [0, 0]
    for key in keys:
        record = await stack.record(key)
        head = stack.head(key)
        if head is None:
            assert record["status"] == "deleted", key
        else:
            assert record["status"] == "available", key
            assert record["etag"] == head["ETag"].strip('"'), key
            assert record["size"] == head["ContentLength"], key
    assert stack.take_all(stack.dlq_url) == []
