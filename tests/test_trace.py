"""``s3convex trace BUCKET/KEY`` (the CLI as a process) for an asset created, overwritten, failed
once (dead-lettered), replayed and deleted: every step, in order, each linked to the next by the
ids Convex recorded — S3 request → SQS message → Convex revision and commit; the DLQ copy → the
replay run → the new message → the revision it produced.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from s3convex.consumer.ops.trace import build_steps
from tests.ops_support import release_all, run_cli, run_cli_on_a_terminal
from tests.stack import Stack

KEY = "traced/scene v1/clip.mp4"


async def _queued_request_ids(stack: Stack, count: int) -> list[str | None]:
    """The x-amz-request-id of each S3 record now on the queue (None where the backend sends
    no responseElements, as moto), leaving the messages there."""
    assert await stack.wait_for_depth(count) >= count
    messages = stack.take_all(delete=False)
    release_all(stack, stack.queue_url, messages)
    ids = []
    for message in messages:
        body = json.loads(message["Body"])
        for record in body.get("Records", []):
            ids.append((record.get("responseElements") or {}).get("x-amz-request-id"))
    return ids


def _test_events_off(stack: Stack) -> None:
    # Provisioning's s3:TestEvent would be counted as an S3 record by nothing here, but drain it
    # first so each step below sees only its own message.
    stack.take_all()


@pytest.mark.e2e
async def test_trace_follows_an_asset_through_a_dlq_episode_and_its_replay(stack: Stack, aws_backend: str) -> None:
    _test_events_off(stack)
    requests: list[str | None] = []

    stack.put(KEY, b"first", Metadata={"s3convex-run-id": "run-20261101-ab12"})  # 1. created by an upload run
    requests += await _queued_request_ids(stack, 1)
    assert await stack.drain() == 0
    stack.put(KEY, b"second")                                  # 2. overwritten
    requests += await _queued_request_ids(stack, 1)
    assert await stack.drain() == 0
    stack.put(KEY, b"third")                                   # 3. fails: a daemon misconfigured
    requests += await _queued_request_ids(stack, 1)            #    for another bucket
    assert await stack.drain(s3_bucket="another-bucket-entirely") == 0
    assert stack.depth(stack.dlq_url)["visible"] == 1
    replayed = await run_cli(stack, "replay", "replay", "--json")  # 4. replayed, then applied
    assert replayed.code == 0, replayed.stderr
    assert await stack.drain() == 0
    stack.s3.delete_object(Bucket=stack.bucket, Key=KEY)       # 5. deleted
    requests += await _queued_request_ids(stack, 1)
    assert await stack.drain() == 0

    if aws_backend == "localstack":  # sends responseElements, as AWS does (moto sends none)
        assert all(requests), requests
    result = await run_cli(stack, "trace", f"{stack.bucket}/{KEY}")
    assert result.code == 0, result.stderr
    trace = result.json
    assert (trace["status"], trace["revision"]) == ("deleted", 4)
    steps = trace["steps"]
    assert [s["step"] for s in steps] == ["applied", "applied", "dead_lettered", "replayed", "applied", "applied"]
    created, overwritten, failed, replay, applied, deleted = steps
    assert [s["revision"] for s in (created, overwritten, applied, deleted)] == [1, 2, 3, 4]
    assert [s["type"] for s in (created, overwritten, applied, deleted)] == ["created"] * 3 + ["removed"]
    assert [s["at"] for s in steps] == sorted(s["at"] for s in steps)
    # S3 request ids as the records carried them (absent on moto), the failed one included.
    assert [s["s3RequestId"] for s in (created, overwritten, applied, deleted)] == [
        requests[0], requests[1], requests[2], requests[3]]
    assert failed["s3RequestId"] == requests[2]
    # The episode: why, and the DLQ copy the replay run moved to a new message — which the
    # revision it produced names.
    assert "not configured here" in failed["reason"] and failed["reason"].startswith("poison")
    assert replay["dlqMessageId"] == failed["dlqMessageId"]
    assert replay["runId"] == replayed.json["runId"] and replay["status"] == "completed"
    assert applied["sqsMessageId"] == replay["sqsMessageId"] != failed["sqsMessageId"]
    assert applied["replayRunId"] == replay["runId"]
    # The uploader's run id, from the object's x-amz-meta-s3convex-run-id.
    assert created["uploadRunId"] == "run-20261101-ab12" and overwritten["uploadRunId"] is None
    # Every revision from its own message and its own commit.
    messages = [s["sqsMessageId"] for s in (created, overwritten, applied, deleted)]
    commits = [s["commit"] for s in (created, overwritten, applied, deleted)]
    assert len(set(messages)) == 4 and None not in messages
    assert len(set(commits)) == 4 and None not in commits

    table = await run_cli_on_a_terminal(stack, "trace", f"{stack.bucket}/{KEY}")
    assert table.code == 0, table.stderr
    for needle in ("dead_lettered", "replayed", "revision 4", replay["runId"], failed["dlqMessageId"]):
        assert needle in table.stdout, needle


async def test_an_unknown_asset_is_an_error(stack: Stack) -> None:
    result = await run_cli(stack, "trace", f"{stack.bucket}/never/seen.txt")
    assert result.code == 1
    assert "nothing in Convex" in result.stderr


def test_steps_order_by_when_the_service_acted() -> None:
    # A replayed event is older in S3 than its DLQ episode; the trace shows the service's order.
    history: list[dict[str, Any]] = [
        {"revision": 2, "type": "created", "eventName": "ObjectCreated:Put", "eventTime": 1_000,
         "appliedAt": 9_000, "correlation": {"sqsMessageId": "m-new"}, "commit": "c2"},
        {"revision": 1, "type": "created", "eventName": "ObjectCreated:Put", "eventTime": 500,
         "appliedAt": 600, "correlation": {"sqsMessageId": "m-1"}, "commit": "c1"},
    ]
    dead = [{"sqsMessageId": "m-old", "dlqMessageId": "d-1", "reason": "poison: x", "receiveCount": 1,
             "failedAt": 2_000}]
    runs = [{"runId": "r-1", "startedAt": 5_000, "status": "completed", "operator": "op",
             "movedIds": [{"from": "d-1", "to": "m-new"}, {"from": "d-other", "to": "m-x"}]}]
    steps = build_steps(history, dead, runs)
    assert [(s["step"], s.get("revision")) for s in steps] == [
        ("applied", 1), ("dead_lettered", None), ("replayed", None), ("applied", 2)]
    assert steps[3]["replayRunId"] == "r-1"
