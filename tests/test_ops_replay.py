"""``s3convex replay`` end to end: real S3/SQS (moto or LocalStack), the daemon, local Convex.

Messages reach the DLQ the way they do in production — the daemon dead-letters poison and
failed work — and the commands run as real processes, except where a test needs to break the
replay between its send and its delete.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from s3convex.adapters.aws import open_clients
from s3convex.consumer.ops.dlq import Selection, describe_body
from s3convex.consumer.ops.dlq_attributes import REPLAY_COUNT_ATTRIBUTE
from s3convex.consumer.ops.replayer import Replayer
from tests.ops_support import release_all, run_cli, s3_event
from tests.stack import Stack

pytestmark = pytest.mark.e2e

WRONG_KEY = "not-the-admin-key-0000000000"


async def _dead_letter_uploads(stack: Stack, keys: list[str], poison: list[str | dict]) -> None:
    """Upload ``keys`` and send ``poison``, then drain with a Convex key that is refused:
    every upload fails permanently (HTTP 401) and lands in the DLQ with its reason."""
    for key in keys:
        stack.put(key, key.encode())
    for body in poison:
        stack.send(body)
    await stack.wait_for_depth(len(keys) + len(poison))
    assert await stack.drain(convex_deploy_key=WRONG_KEY) == 0
    assert stack.depth() == {"visible": 0, "invisible": 0, "delayed": 0}


async def test_list_dry_run_filtered_replay_then_daemon_applies(stack: Stack) -> None:
    keys = ["renders/a 1.mp4", "renders/a+2.mp4", "thumbs/b1.png"]
    await _dead_letter_uploads(stack, keys, ["this is not json",
                                             s3_event("elsewhere", "x/y.txt")])

    listed = await run_cli(stack, "replay", "list", "--json")
    assert listed.code == 0, listed.stderr
    messages = listed.json["messages"]
    assert len(messages) == 5
    by_key = {m["keys"][0]: m for m in messages if m["keys"]}
    for key in keys:
        assert by_key[key]["reason"].startswith("permanent: assets:applyEvents: "), by_key[key]
        assert "(HTTP 401)" in by_key[key]["reason"], by_key[key]
        assert by_key[key]["events"] == ["ObjectCreated:Put"]
        assert by_key[key]["buckets"] == [stack.bucket]
        assert by_key[key]["receiveCount"] == 1
        assert by_key[key]["ageSeconds"] is not None
    assert by_key["x/y.txt"]["reason"] == "poison: bucket 'elsewhere' is not configured here"
    unkeyed = [m for m in messages if not m["keys"]]
    assert [m["reason"] for m in unkeyed] == ["poison: body is not JSON: Expecting value: line 1 column 1 (char 0)"]
    assert stack.depth(stack.dlq_url)["visible"] == 5  # looked at, put back at once

    dry = await run_cli(stack, "replay", "replay", "--key", "renders/*", "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    assert sorted(m["keys"][0] for m in dry.json["messages"]) == keys[:2]
    assert dry.json["moved"] == 0 and dry.json["selected"] == 2
    assert stack.depth(stack.dlq_url)["visible"] == 5
    assert stack.depth() == {"visible": 0, "invisible": 0, "delayed": 0}

    reason_only = await run_cli(stack, "replay", "list", "--reason", "POISON", "--json")
    assert reason_only.json["matching"] == 2

    moved = await run_cli(stack, "replay", "replay", "--key", "renders/*", "--json")
    assert moved.code == 0, moved.stderr
    assert moved.json["moved"] == 2 and moved.json["sendFailed"] == 0
    assert stack.depth(stack.dlq_url)["visible"] == 3
    on_source = stack.take_all(delete=False)
    assert sorted(describe_body(m["Body"])[1][0] for m in on_source) == sorted(keys[:2])
    for message in on_source:
        attributes = message["MessageAttributes"]
        assert attributes[REPLAY_COUNT_ATTRIBUTE]["StringValue"] == "1"
        assert attributes["s3convex.failure-reason"]["StringValue"].startswith("permanent:")
    release_all(stack, stack.queue_url, on_source)

    assert await stack.drain() == 0
    for key in keys[:2]:
        record = await stack.record(key)
        assert record["status"] == "available" and record["size"] == len(key.encode()), key
    assert await stack.record(keys[2]) is None
    assert stack.depth(stack.dlq_url)["visible"] == 3

    runs = await stack.convex.query("operations:listReplayRuns", {"limit": 5})
    run = next(r for r in runs if r["runId"] == moved.json["runId"])
    assert run["status"] == "completed" and run["kind"] == "replay"
    assert run["filters"] == {"keys": ["renders/*"]}
    assert (run["examined"], run["selected"], run["moved"]) == (5, 2, 2)
    assert {pair["from"] for pair in run["movedIds"]} == {m["messageId"] for m in dry.json["messages"]}
    assert not any(r["runId"] == dry.json["runId"] for r in runs)  # a dry run writes nothing


async def test_export_edit_import_replay(stack: Stack, tmp_path: Path) -> None:
    stack.put("fixed/clip.mp4", b"clip")
    await _dead_letter_uploads(stack, [], [s3_event("elsewhere", "fixed/clip.mp4", size=4),
                                           "this is not json"])
    assert stack.depth(stack.dlq_url)["visible"] == 3  # + the upload's event, refused (401)

    exported = tmp_path / "dlq.jsonl"
    result = await run_cli(stack, "replay", "export", str(exported), "--reason", "elsewhere")
    assert result.code == 0, result.stderr
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["buckets"] == ["elsewhere"]
    assert stack.depth(stack.dlq_url)["visible"] == 3  # export removes nothing

    body = json.loads(lines[0]["body"])
    body["Records"][0]["s3"]["bucket"]["name"] = stack.bucket  # the operator's fix
    lines[0]["body"] = body  # an edited body may be written back as JSON
    exported.write_text(json.dumps(lines[0]) + "\n")

    imported = await run_cli(stack, "replay", "import", str(exported), "--json")
    assert imported.code == 0, imported.stderr
    assert imported.json | {"file": None} == {"file": None, "target": stack.dlq_url, "lines": 1,
                                              "sent": 1, "sendFailed": 0, "replaced": 1,
                                              "originalsNotFound": 0}
    after = (await run_cli(stack, "replay", "list", "--json")).json["messages"]
    assert len(after) == 3
    edited = [m for m in after if m["keys"] == ["fixed/clip.mp4"] and m["decodeError"] is None
              and m["buckets"] == [stack.bucket] and m["reason"].startswith("poison: bucket")]
    assert len(edited) == 1, after  # the edited copy replaced the original, attributes kept

    moved = await run_cli(stack, "replay", "replay", "--id", edited[0]["messageId"], "--json")
    assert moved.json["moved"] == 1, moved.stderr
    assert await stack.drain() == 0
    record = await stack.record("fixed/clip.mp4")
    assert record["status"] == "available" and record["size"] == 4
    assert stack.depth(stack.dlq_url)["visible"] == 2


class Crash(BaseException):
    """The process dies: nothing after this point runs, not even cleanup calls to SQS."""


class CrashingSqs:
    """The real SQS client, except that the process "dies" at its first DeleteMessageBatch —
    after the send to the source queue has succeeded."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._sqs, name)

        async def wrapped(**kwargs: Any) -> Any:
            if name == "delete_message_batch":
                self.crashed = True
            if self.crashed:
                raise Crash(name)
            return await call(**kwargs)

        return wrapped


async def test_crash_between_send_and_delete_duplicates_but_loses_nothing(stack: Stack) -> None:
    keys = [f"crash/{i}.txt" for i in range(6)]
    await _dead_letter_uploads(stack, keys, [])
    assert stack.depth(stack.dlq_url)["visible"] == len(keys)

    settings = stack.settings()
    async with open_clients(settings.aws) as aws:
        crashing = CrashingSqs(aws.sqs)
        replayer = Replayer(crashing, stack.dlq_url, stack.queue_url, selection=Selection(),
                            concurrency=1, visibility_timeout=2, wait_seconds=0)
        with pytest.raises(Crash):
            await replayer.run()
        sent_before_crash = replayer.report.moved
        assert sent_before_crash >= 1

        # Sent, never deleted: once the dead process's hold lapses (2 s; LocalStack notices a
        # little later), the DLQ has them all again.
        for _ in range(100):
            if stack.depth(stack.dlq_url)["visible"] == len(keys):
                break
            await asyncio.sleep(0.1)
        assert stack.depth(stack.dlq_url) == {"visible": len(keys), "invisible": 0, "delayed": 0}
        assert stack.depth()["visible"] == sent_before_crash

        again = await Replayer(aws.sqs, stack.dlq_url, stack.queue_url, selection=Selection(),
                               visibility_timeout=5, wait_seconds=0).run()
        assert again.moved == len(keys) and again.delete_failed == 0

    assert stack.depth(stack.dlq_url) == {"visible": 0, "invisible": 0, "delayed": 0}
    assert stack.depth()["visible"] == len(keys) + sent_before_crash  # duplicates, none lost
    assert await stack.drain() == 0
    for key in keys:
        assert (await stack.record(key))["status"] == "available", key
        assert len(await stack.history(key)) == 1, f"{key}: a duplicate was applied twice"
    assert stack.take_all(stack.dlq_url) == []


async def test_show_and_runs(stack: Stack) -> None:
    await _dead_letter_uploads(stack, ["show/one.txt"], [])
    listed = (await run_cli(stack, "replay", "list", "--json")).json["messages"]
    shown = await run_cli(stack, "replay", "show", listed[0]["sourceMessageId"], "--json")
    assert shown.code == 0, shown.stderr
    assert shown.json["messageId"] == listed[0]["messageId"]
    assert json.loads(shown.json["body"])["Records"][0]["eventName"] == "ObjectCreated:Put"
    assert shown.json["messageAttributes"]["s3convex.failure-reason"]["DataType"] == "String"
    missing = await run_cli(stack, "replay", "show", "no-such-id")
    assert missing.code == 1 and "no message no-such-id" in missing.stderr

    moved = await run_cli(stack, "replay", "replay", "--limit", "1", "--rate", "5/s",
                          "--operator", "alice", "--json")
    assert moved.json["moved"] == 1
    runs = await run_cli(stack, "replay", "runs", "--json")
    assert runs.json[0]["runId"] == moved.json["runId"]
    assert runs.json[0]["operator"] == "alice"
    assert runs.json[0]["filters"] == {"limit": 1, "ratePerSecond": 5.0}


async def test_import_to_queue_is_an_audited_replay(stack: Stack, tmp_path: Path) -> None:
    keys = ["direct/1.txt", "direct/2.txt"]
    await _dead_letter_uploads(stack, keys, [])
    exported = tmp_path / "all.jsonl"
    assert (await run_cli(stack, "replay", "export", str(exported))).code == 0

    imported = await run_cli(stack, "replay", "import", str(exported), "--to", "queue", "--json")

    assert imported.code == 0, imported.stderr
    assert (imported.json["sent"], imported.json["replaced"]) == (2, 2)
    assert imported.json["target"] == stack.queue_url
    assert stack.depth(stack.dlq_url)["visible"] == 0  # originals replaced by what was sent
    on_source = stack.take_all(delete=False)
    assert {m["MessageAttributes"][REPLAY_COUNT_ATTRIBUTE]["StringValue"] for m in on_source} == {"1"}
    release_all(stack, stack.queue_url, on_source)
    run = (await stack.convex.query("operations:listReplayRuns", {"limit": 1}))[0]
    assert (run["kind"], run["status"], run["moved"]) == ("import", "completed", 2)
    assert run["filters"] == {"file": str(exported)} and run["source"] == str(exported)
    assert await stack.drain() == 0
    for key in keys:
        assert (await stack.record(key))["status"] == "available"
