"""Pure pieces of the operator tools: selection, attributes, pacing, import files, the
reconcile merge, probe routing. No servers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import typer

from s3convex.adapters.sqs_batch import entry_bytes, size_batches
from s3convex.consumer.ops.assets import AssetFilter, parse_location
from s3convex.consumer.ops.dlq import DlqMessage, Selection, describe_body
from s3convex.consumer.ops.dlq_attributes import (
    REPLAY_COUNT_ATTRIBUTE,
    attributes_from_json,
    attributes_to_json,
    with_replay_count,
)
from s3convex.consumer.ops.dlq_files import read_import_file
from s3convex.consumer.ops.output import parse_duration, parse_rate
from s3convex.consumer.ops.pacing import RateLimiter, next_slot
from s3convex.consumer.ops.reconcile_merge import (
    S3Object,
    ascending,
    effective_prefix,
    judge,
    merge_by_key,
)
from s3convex.consumer.probes import ProbeServer, Readiness
from s3convex.core.errors import PermanentError
from tests.ops_support import s3_event

NOW = 1_800_000_000_000


def _message(body: Any, *, reason: str | None = None, sent_ago_s: float = 60,
             source_id: str | None = None, message_id: str = "m-1") -> DlqMessage:
    text = body if isinstance(body, str) else json.dumps(body)
    attributes = {}
    if reason:
        attributes["s3convex.failure-reason"] = {"DataType": "String", "StringValue": reason}
    if source_id:
        attributes["s3convex.source-message-id"] = {"DataType": "String", "StringValue": source_id}
    return DlqMessage.from_sqs({
        "MessageId": message_id, "ReceiptHandle": "rh", "Body": text,
        "Attributes": {"SentTimestamp": str(int(NOW - sent_ago_s * 1000)), "ApproximateReceiveCount": "1"},
        "MessageAttributes": attributes,
    })


# --- what a DLQ message is -------------------------------------------------------------------------

def test_describe_body_decodes_with_the_consumers_decoder() -> None:
    assert describe_body(json.dumps(s3_event("media", "a b/c+d.mp4"))) == (
        ("media",), ("a b/c+d.mp4",), ("ObjectCreated:Put",), None)
    sns = {"Type": "Notification", "Message": json.dumps(s3_event("media", "x.txt"))}
    assert describe_body(json.dumps(sns))[1] == ("x.txt",)
    # Dead-lettered for its bucket: still shows its key.
    assert describe_body(json.dumps(s3_event("elsewhere", "k.txt")))[:3] == (
        ("elsewhere",), ("k.txt",), ("ObjectCreated:Put",))
    buckets, keys, events, error = describe_body("not json")
    assert (buckets, keys, events) == ((), (), ()) and error.startswith("body is not JSON")
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "media"}
    assert describe_body(json.dumps(test_event)) == (("media",), (), ("s3:TestEvent",), None)


def test_selection_combines_filters() -> None:
    message = _message(s3_event("media", "renders/a.mp4"), reason="permanent: HTTP 401",
                       sent_ago_s=3600, source_id="src-1")
    assert Selection().matches(message, NOW)
    assert Selection(keys=("renders/*",)).matches(message, NOW)
    assert Selection(keys=("thumbs/*", "*.mp4")).matches(message, NOW)  # any of
    assert not Selection(keys=("renders/*.png",)).matches(message, NOW)
    assert Selection(events=("ObjectCreated:*",)).matches(message, NOW)
    assert not Selection(events=("ObjectRemoved:*",)).matches(message, NOW)
    assert Selection(reasons=("http 401",)).matches(message, NOW)  # case-insensitive
    assert not Selection(reasons=("poison",)).matches(message, NOW)
    assert Selection(message_ids=("src-1",)).matches(message, NOW)  # the original id works too
    assert Selection(message_ids=("m-1",)).matches(message, NOW)
    assert Selection(older_than_s=1800).matches(message, NOW)
    assert not Selection(older_than_s=7200).matches(message, NOW)
    assert Selection(newer_than_s=7200).matches(message, NOW)
    assert not Selection(keys=("renders/*",), reasons=("poison",)).matches(message, NOW)  # all kinds
    assert not Selection(keys=("*",)).matches(_message("not json"), NOW)  # no keys, no key match
    assert Selection(keys=("a",), older_than_s=5.0).to_audit() == {"keys": ["a"], "olderThanSeconds": 5.0}


def test_replay_count_is_added_and_counts_up() -> None:
    once = with_replay_count({"trace": {"DataType": "String", "StringValue": "t"}})
    assert once[REPLAY_COUNT_ATTRIBUTE] == {"DataType": "Number", "StringValue": "1"}
    assert once["trace"] == {"DataType": "String", "StringValue": "t"}
    assert with_replay_count(once)[REPLAY_COUNT_ATTRIBUTE]["StringValue"] == "2"


def test_replay_count_makes_room_within_sqs_ten_attributes() -> None:
    ours = {name: {"DataType": "String", "StringValue": "v"} for name in (
        "s3convex.failure-reason", "s3convex.source-message-id", "s3convex.receive-count",
        "s3convex.failed-at")}
    theirs = {f"a{i}": {"DataType": "String", "StringValue": "v"} for i in range(6)}
    replayed = with_replay_count({**theirs, **ours})
    assert len(replayed) == 10
    assert "s3convex.failed-at" not in replayed and set(theirs) <= set(replayed)
    full = {f"a{i}": {"DataType": "String", "StringValue": "v"} for i in range(10)}
    assert with_replay_count(full) == full  # someone else's ten are all kept


def test_binary_attributes_survive_export_and_import() -> None:
    attributes = {"blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
                  "n": {"DataType": "Number", "StringValue": "3"}}
    as_json = json.loads(json.dumps(attributes_to_json(attributes)))
    assert attributes_from_json(as_json) == attributes
    with pytest.raises(ValueError, match="DataType"):
        attributes_from_json({"x": {"StringValue": "1"}})


def test_batches_respect_count_and_bytes() -> None:
    assert [len(b) for b in size_batches(list(range(23)), lambda _: 1)] == [10, 10, 3]
    big = 100 * 1024
    assert [len(b) for b in size_batches([big] * 5, lambda n: n)] == [2, 2, 1]
    assert entry_bytes("ab", {"k": {"DataType": "String", "StringValue": "vv"}}) == 2 + 1 + 6 + 2


# --- pacing ---------------------------------------------------------------------------------------------

def test_next_slot_spaces_batches_to_the_rate() -> None:
    wait, free = next_slot(0.0, 100.0, 10, 0.05)  # 20/s
    assert (wait, free) == (0.0, 100.5)
    wait, free = next_slot(free, 100.1, 10, 0.05)
    assert (round(wait, 6), free) == (0.4, 101.0)
    wait, free = next_slot(free, 105.0, 1, 0.05)  # idle for a while: no debt carried over
    assert (wait, free) == (0.0, 105.05)


async def test_rate_limiter_holds_the_average_rate() -> None:
    clock = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    limiter = RateLimiter(5, clock=lambda: clock[0], sleep=sleep)
    for _ in range(4):
        await limiter.acquire(5)  # 20 messages at 5/s: the last batch goes at t=3 s
    assert clock[0] == pytest.approx(3.0)
    await RateLimiter(None).acquire(1000)  # no rate: never waits


def test_durations_and_rates() -> None:
    assert parse_duration("90") == 90 and parse_duration("15m") == 900 and parse_duration("7d") == 604800
    assert parse_rate("50/s") == 50 and parse_rate("3000/m") == 50 and parse_rate("2") == 2
    for bad in ("soon", "-1m"):
        with pytest.raises(typer.BadParameter):
            parse_duration(bad)
    for bad in ("0/s", "fast", "5/d"):
        with pytest.raises(typer.BadParameter):
            parse_rate(bad)


# --- import files ---------------------------------------------------------------------------------------

def test_import_file_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join([
        json.dumps({"messageId": "m1", "body": "raw text", "reason": "ignored"}),
        "",
        json.dumps({"body": {"Records": []}, "messageAttributes": {
            "k": {"DataType": "String", "StringValue": "v"}}}),
    ]) + "\n")
    lines = list(read_import_file(path))
    assert [(line.line_no, line.original_id, line.body) for line in lines] == [
        (1, "m1", "raw text"), (3, None, '{"Records":[]}')]
    assert lines[1].attributes == {"k": {"DataType": "String", "StringValue": "v"}}


@pytest.mark.parametrize(("line", "problem"), [
    ("{not json", "line 2: Expecting property name"),
    ("[1]", "line 2: not a JSON object"),
    ('{"body": ""}', "line 2: needs a non-empty 'body'"),
    ('{"body": "x", "messageAttributes": {"a": {}}}', "line 2: attribute 'a' needs a DataType"),
    (json.dumps({"body": "x" * (256 * 1024 + 1)}), "line 2: message is larger than SQS's 256 KiB"),
])
def test_import_file_refuses_bad_lines_by_number(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"body": "fine"}\n' + line + "\n")
    with pytest.raises(PermanentError, match=problem.replace("(", r"\(")):
        list(read_import_file(path))


# --- reconcile ----------------------------------------------------------------------------------------

def _obj(key: str, size: int = 1, etag: str = "e1") -> S3Object:
    return S3Object(key, size, etag, NOW)


def test_judge_each_kind_of_drift() -> None:
    available = {"key": "k", "status": "available", "size": 1, "etag": "e1"}
    tombstone = {**available, "status": "deleted"}
    assert judge(_obj("k"), available) is None
    assert judge(None, tombstone) is None
    assert judge(_obj("k"), None).kind == "missing"
    assert judge(_obj("k"), tombstone).kind == "missing"
    assert judge(None, available).kind == "gone"
    assert judge(_obj("k", size=2), available).detail == "size 1 → 2"
    assert judge(_obj("k", etag="e2"), available).detail == "etag e1 → e2"
    assert judge(_obj("k"), {**available, "etag": None}) is None  # nothing to compare
    # An upload still in flight (or failed) that S3 never had: revision 0, not "gone".
    for status in ("pending", "uploading", "failed"):
        assert judge(None, {"key": "k", "status": status, "revision": 0, "size": 0}) is None
    assert judge(None, {**available, "revision": 1}).kind == "gone"


def test_effective_prefix_stays_within_the_notification_prefix() -> None:
    assert effective_prefix("", None) == ""
    assert effective_prefix("", "renders/") == "renders/"
    assert effective_prefix("sessions/", None) == "sessions/"
    assert effective_prefix("sessions/", "sessions/s1/") == "sessions/s1/"
    assert effective_prefix("sessions/s1/", "sessions/") == "sessions/s1/"
    assert effective_prefix("sessions/", "renders/") is None


async def _aiter(items: list[Any]):
    for item in items:
        yield item


async def test_merge_pairs_two_sorted_streams_by_key() -> None:
    objects = [_obj("a"), _obj("c"), _obj("d")]
    records = [{"key": "b"}, {"key": "c"}, {"key": "e"}]
    pairs = [(o and o.key, r and r["key"]) async for o, r in merge_by_key(_aiter(objects), _aiter(records))]
    assert pairs == [("a", None), (None, "b"), ("c", "c"), ("d", None), (None, "e")]


def test_python_string_order_is_utf8_byte_order() -> None:
    keys = ["\uff61", "\U0001f600", "é", "z", "Z", "a/b", "a-b", "\u00a0", "\ud7ff", "\ue000"]
    assert sorted(keys) == sorted(keys, key=lambda k: k.encode())
    assert sorted(keys) != sorted(keys, key=lambda k: k.encode("utf-16-be"))  # JS's order differs


async def test_out_of_order_stream_is_refused() -> None:
    stream = ascending(_aiter(["a", "\U0001f600", "\uff61"]), lambda k: k, "the S3 listing")
    with pytest.raises(PermanentError, match="not in UTF-8 key order"):
        _ = [k async for k in stream]


# --- assets ---------------------------------------------------------------------------------------------

def test_asset_locations_and_filters() -> None:
    assert parse_location("media/a/b c.mp4") == ("media", "a/b c.mp4")
    assert parse_location("s3://media/k") == ("media", "k")
    for bad in ("media", "media/", "/k"):
        with pytest.raises(typer.BadParameter):
            parse_location(bad)
    assert AssetFilter("media", session="s1", status="deleted").source() == (
        "assets:listBySession", {"sessionId": "s1"})
    assert AssetFilter("media", prefix="p/").source() == ("assets:listByBucket", {"bucket": "media", "prefix": "p/"})
    wanted = AssetFilter("media", session="s1", status="deleted", prefix="p/")
    assert wanted.matches({"bucket": "media", "status": "deleted", "key": "p/x"})
    assert not wanted.matches({"bucket": "other", "status": "deleted", "key": "p/x"})
    assert not wanted.matches({"bucket": "media", "status": "available", "key": "p/x"})


# --- probes ---------------------------------------------------------------------------------------------

async def test_readiness_caches_successes_and_rechecks_when_stale() -> None:
    clock = [0.0]
    calls: list[str] = []
    healthy = {"convex": True}

    async def convex() -> None:
        calls.append("convex")
        if not healthy["convex"]:
            raise ConnectionError("refused")

    poller = asyncio.create_task(asyncio.sleep(60))
    stopping = [False]
    readiness = Readiness(pollers=lambda: [poller], checks={"convex": convex},
                          stopping=lambda: stopping[0], fresh_seconds=10, clock=lambda: clock[0])
    server = ProbeServer(readiness, 0)
    try:
        assert (await server.route("GET", "/readyz"))[0] == 200
        clock[0] = 5.0
        assert (await server.route("GET", "/readyz"))[0] == 200
        assert calls == ["convex"]  # fresh: no second call
        healthy["convex"] = False
        clock[0] = 11.0
        status, body = await server.route("GET", "/readyz")
        assert status == 503 and body["convex"]["error"] == "ConnectionError: refused"
        assert body["convex"]["lastOkSecondsAgo"] == 11.0
        healthy["convex"] = True
        stopping[0] = True
        status, body = await server.route("GET", "/readyz")
        assert status == 503 and body["stopping"] and body["convex"]["ok"]
        assert (await server.route("GET", "/healthz")) == (200, {"status": "alive"})
        assert (await server.route("GET", "/nope"))[0] == 404
        assert (await server.route("DELETE", "/healthz"))[0] == 405
    finally:
        poller.cancel()
