"""MinIO's webhook → the bridge → SQS → the daemon → Convex, on real local servers.

MinIO itself cannot run here, so the tests play MinIO's webhook target: they store the object
(in the emulator's S3, whose bucket notifications are switched off — MinIO is the only notifier)
and post the body MinIO would post for it (``tests/fixtures/minio``), retrying on non-2xx as
MinIO's ``queue_dir`` store does. ``pytest -m e2e --backend=localstack tests/test_bridge_e2e.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from typing import Any
from urllib.parse import unquote_plus

import pytest

from tests.backends import AwsResources
from tests.ops_support import run_cli
from tests.stack import AWKWARD_KEYS, Stack
from tests.test_bridge import TOKEN, minio_body, minio_event, queues, running_bridge, take_all  # noqa: F401

pytestmark = pytest.mark.e2e

LOAD_POSTS = int(os.environ.get("S3CONVEX_BRIDGE_LOAD_POSTS", "10000"))
LOAD_CLIENTS = 32


def minio_only(stack: Stack) -> None:
    """The bucket stops notifying SQS itself (MinIO is the notifier); its test event is gone."""
    stack.s3.put_bucket_notification_configuration(Bucket=stack.bucket, NotificationConfiguration={})
    stack.take_all()


def put_and_describe(stack: Stack, key: str, body: bytes, **kwargs: Any) -> dict[str, Any]:
    """Store the object, and the MinIO put notification for it."""
    stored = stack.put(key, body, **kwargs)
    return minio_event("put.json", stack.bucket, key, size=len(body), eTag=stored["ETag"].strip('"'))


async def test_minio_puts_and_deletes_through_the_bridge_land_in_convex(stack: Stack) -> None:
    minio_only(stack)
    keys = [*AWKWARD_KEYS, "sessions/s-7/scenes/intro shot/v1/clip ü+1.mp4"]
    async with running_bridge(stack.bucket) as bridge:
        for key in keys:
            status, _, answer = await bridge.post(put_and_describe(stack, key, key.encode(),
                                                                   ContentType="video/mp4"))
            assert status == 200 and answer["status"] == "queued", answer
        stack.s3.delete_object(Bucket=stack.bucket, Key=keys[1])
        status, _, answer = await bridge.post(minio_event("delete.json", stack.bucket, keys[1]))
        assert status == 200, answer
        poison = minio_event("accessed-get.json", stack.bucket, keys[0])
        status, _, answer = await bridge.post(poison)
        assert (status, answer["status"]) == (200, "dead_lettered")
    assert stack.depth()["visible"] == len(keys) + 1

    assert await stack.drain() == 0

    for key in keys:
        record = await stack.record(key)
        assert record is not None, key
        if key == keys[1]:
            assert record["status"] == "deleted"
            continue
        assert record["status"] == "available", key
        assert record["size"] == len(key.encode()) and record["contentType"] == "video/mp4"
        head = stack.head(key)
        assert head is not None and record["etag"] == head["ETag"].strip('"')
        assert len(await stack.history(key)) == 1, key
    assert stack.depth() == {"visible": 0, "invisible": 0, "delayed": 0}

    listed = await run_cli(stack, "replay", "list", "--json")  # the poison, as an operator sees it
    assert listed.code == 0, listed.stderr
    [dead] = listed.json["messages"]
    assert dead["reason"] == "poison: no handler for event 'ObjectAccessed:Get'"
    assert dead["keys"] == [keys[0]] and dead["events"] == ["ObjectAccessed:Get"]
    assert dead["sourceMessageId"].startswith("minio-bridge:")


class TcpProxy:
    """A TCP relay in front of the emulator: stopping it is SQS going away (connections
    refused, open ones cut), starting it again on the same port is SQS coming back."""

    def __init__(self, upstream: str) -> None:
        host_port = upstream.split("://", 1)[1].rstrip("/")
        self._upstream_host, port = host_port.rsplit(":", 1)
        self._upstream_port = int(port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self._upstream_host, self._upstream_port)
        self._writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}


async def test_sqs_down_is_5xx_and_minio_s_retry_later_lands_exactly_one_version(stack: Stack) -> None:
    minio_only(stack)
    key = "sessions/s-9/scenes/retry/v1/take 1.mp4"
    event = put_and_describe(stack, key, b"the only version")
    proxy = TcpProxy(stack.resources.endpoint_url)
    await proxy.start()
    async with running_bridge(stack.bucket, aws_overrides={"AWS_ENDPOINT_URL": proxy.url}) as bridge:
        await proxy.stop()
        status, headers, answer = await bridge.post(event)
        assert status == 503 and headers["Retry-After"], answer
        async with bridge.http.get(bridge.url + "/readyz") as response:
            assert response.status == 503
        assert stack.depth()["visible"] == 0

        await proxy.start()  # SQS is back; MinIO sends the event again from its queue_dir
        for _ in range(10):  # the pool's cut connections are replaced within an attempt or two
            status, _, answer = await bridge.post(event)
            if status == 200:
                break
            await asyncio.sleep(0.5)
        assert status == 200 and answer["status"] == "queued", answer
    assert stack.depth()["visible"] == 1  # one message: the failed post left nothing behind

    assert await stack.drain() == 0

    record = await stack.record(key)
    assert record is not None and record["status"] == "available"
    assert record["size"] == len(b"the only version")
    assert len(await stack.history(key)) == 1
    assert stack.take_all(stack.dlq_url) == []


async def test_ten_thousand_posts_from_a_bounded_client_lose_nothing(
        aws_backend: str, aws_resources: AwsResources, queues: tuple[str, str],  # noqa: F811
        record_property: Any) -> None:
    if aws_backend != "localstack":
        pytest.skip("a load test: moto's SQS is too slow for 10,000 messages (run --backend=localstack)")
    bucket = "video-assets"
    bodies = [minio_body(minio_event("put.json", bucket, f"load/{i:05d}/clip {i}.mp4", size=i))
              for i in range(LOAD_POSTS)]
    retried = 0
    async with running_bridge(bucket, BRIDGE_MAX_CONCURRENCY=LOAD_CLIENTS) as bridge:
        pending = list(range(len(bodies)))

        async def client() -> None:
            nonlocal retried
            while pending:
                body = bodies[pending.pop()]
                while True:  # as MinIO does: a non-2xx is sent again
                    async with bridge.http.post(bridge.url + "/", data=body,
                                                headers={"Authorization": f"Bearer {TOKEN}"}) as response:
                        if response.status == 200:
                            break
                    retried += 1
                    await asyncio.sleep(0.2)

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(LOAD_CLIENTS)))
        elapsed = time.monotonic() - started
    rate = LOAD_POSTS / elapsed
    record_property("bridge_posts_per_second", round(rate))
    print(f"\nbridge: {LOAD_POSTS} posts in {elapsed:.1f} s = {rate:.0f}/s, {retried} retried")

    keys = await asyncio.to_thread(_received_keys, aws_resources, queues[0], LOAD_POSTS)
    assert len(keys) == LOAD_POSTS, f"{LOAD_POSTS - len(keys)} lost"
    assert keys == {f"load/{i:05d}/clip {i}.mp4" for i in range(LOAD_POSTS)}
    assert take_all(aws_resources, queues[1]) == []


def _received_keys(aws_resources: AwsResources, queue_url: str, expected: int) -> set[str]:
    """Every key on the queue, by 8 concurrent receivers (each message held out of sight)."""
    keys: set[str] = set()
    seen = 0
    lock = threading.Lock()

    def receive() -> None:
        nonlocal seen
        sqs = aws_resources.client("sqs")
        empty = 0
        while empty < 3:
            batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                        VisibilityTimeout=600).get("Messages", [])
            empty = 0 if batch else empty + 1
            with lock:
                seen += len(batch)
                for message in batch:
                    record = json.loads(message["Body"])["Records"][0]
                    keys.add(record["s3"]["object"]["key"])

    threads = [threading.Thread(target=receive) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == expected, f"{seen} messages for {expected} posts (duplicates or losses)"
    return {unquote_plus(key) for key in keys}
