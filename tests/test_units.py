"""Pure pieces: backoff, retry decisions, ETag kinds, public URLs, the micro-batcher."""

from __future__ import annotations

import asyncio
import random

import pytest

from s3convex.adapters.urls import public_url
from s3convex.consumer.batching import MicroBatcher
from s3convex.consumer.retry import RetryPolicy, decide
from s3convex.core.asset import etag_kind
from s3convex.core.backoff import backoff_delay
from s3convex.core.errors import (
    ConvexUnavailable,
    PermanentError,
    PoisonMessage,
    StorageUnavailable,
)


def test_backoff_grows_is_jittered_and_capped() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, base=1, cap=30, rng=rng) for n in range(1, 12)]
    for attempt, delay in enumerate(delays, start=1):
        ceiling = min(30, 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 30
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered, not a fixed ladder


def test_retryable_error_releases_with_backoff_of_receive_count() -> None:
    policy = RetryPolicy(max_receive_count=5, base_seconds=2, cap_seconds=300)
    first = decide(StorageUnavailable("slow down"), 1, policy, random.Random(1))
    third = decide(ConvexUnavailable("503"), 3, policy, random.Random(1))
    assert first.action == third.action == "release"
    assert 1 <= first.delay_seconds <= 2
    assert 4 <= third.delay_seconds <= 8


def test_last_receive_dead_letters_with_reason() -> None:
    decision = decide(StorageUnavailable("HeadObject: SlowDown"), 5, RetryPolicy(max_receive_count=5))
    assert decision.action == "dead_letter"
    assert "gave up after 5 receives" in decision.reason
    assert "SlowDown" in decision.reason


def test_poison_and_permanent_go_to_dlq_at_once() -> None:
    assert decide(PoisonMessage("not JSON"), 1, RetryPolicy()).reason == "poison: not JSON"
    assert decide(PermanentError("denied"), 1, RetryPolicy()).action == "dead_letter"


@pytest.mark.parametrize(
    ("etag", "sse", "kind"),
    [
        ("d41d8cd98f00b204e9800998ecf8427e", None, "md5"),
        ("d41d8cd98f00b204e9800998ecf8427e", "AES256", "md5"),
        ("d41d8cd98f00b204e9800998ecf8427e", "aws:kms", "unknown"),
        ("3858f62230ac3c915f300c664312c11f-4", None, "multipart"),
        ("3858f62230ac3c915f300c664312c11f-4", "aws:kms", "multipart"),
        ("something-else", None, "unknown"),
        (None, None, None),
    ],
)
def test_etag_kind(etag: str | None, sse: str | None, kind: str | None) -> None:
    assert etag_kind(etag, sse) == kind


def test_public_url_encodes_each_segment() -> None:
    assert (
        public_url("https://cdn.example.com/assets/", "sessions/a b/c+d/ü?#.mp4")
        == "https://cdn.example.com/assets/sessions/a%20b/c%2Bd/%C3%BC%3F%23.mp4"
    )


async def test_batcher_coalesces_and_routes_results() -> None:
    calls: list[list[int]] = []

    async def flush(items):
        calls.append(list(items))
        return [item * 10 for item in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(flush, max_size=4, max_wait=0.05, max_concurrent=2)
    runner = asyncio.create_task(batcher.run())
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    await batcher.close()
    await runner
    assert results == [i * 10 for i in range(10)]
    assert sorted(len(c) for c in calls) == [2, 4, 4]  # two full batches, the rest on the timer


async def test_batcher_flush_error_reaches_every_caller_of_that_batch() -> None:
    async def flush(items):
        raise ConvexUnavailable("down")

    batcher: MicroBatcher[int, int] = MicroBatcher(flush, max_size=3, max_wait=0.01, max_concurrent=1)
    runner = asyncio.create_task(batcher.run())
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    await batcher.close()
    await runner
    assert all(isinstance(o, ConvexUnavailable) for o in outcomes)


def test_aws_errors_map_to_the_two_roots() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    from s3convex.adapters.aws import map_aws_error
    from s3convex.core.errors import StorageError

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")

    assert isinstance(map_aws_error(client_error("SlowDown", 503), "HeadObject"), StorageUnavailable)
    assert isinstance(map_aws_error(client_error("ThrottlingException", 400), "Receive"), StorageUnavailable)
    assert isinstance(map_aws_error(client_error("InternalError", 500), "Put"), StorageUnavailable)
    assert isinstance(map_aws_error(client_error("AccessDenied", 403), "HeadObject"), StorageError)
    network = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    assert isinstance(map_aws_error(network, "ReceiveMessage"), StorageUnavailable)
    assert isinstance(map_aws_error(ConnectionResetError("reset"), "ReceiveMessage"), StorageUnavailable)


def test_log_lines_are_json_with_context_and_no_secrets() -> None:
    import io
    import json
    import logging

    from s3convex.consumer.logs import configure_logging, log_context, redact

    stream = io.StringIO()
    configure_logging("INFO", stream)
    url = ("https://b.s3.amazonaws.com/k.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256"
           "&X-Amz-Credential=AKIAEXAMPLE%2F20261125%2Fus-east-1%2Fs3%2Faws4_request"
           "&X-Amz-Signature=deadbeefcafe0123456789&X-Amz-Expires=3600")
    with log_context(message_id="m-1", key="a b.mp4"):
        logging.getLogger("t").info("stored url", extra={"url": url,
                                                          "header": "Authorization: Convex prod:secret|abc"})
    line = json.loads(stream.getvalue())
    assert (line["msg"], line["message_id"], line["key"], line["level"]) == ("stored url", "m-1", "a b.mp4", "info")
    assert "deadbeefcafe" not in stream.getvalue()
    assert "AKIAEXAMPLE" not in stream.getvalue()
    assert "prod:secret" not in stream.getvalue()
    assert "X-Amz-Signature=REDACTED" in line["url"]
    assert redact("convex unavailable, holding batch") == "convex unavailable, holding batch"
    logging.getLogger().handlers.clear()
