"""``s3convex reconcile`` end to end: drift made the ways it happens in production (uploads
while notifications were off, objects deleted out of band, objects changed behind the
consumer's back), found by the dry run, repaired by ``--fix`` through ``assets:applyEvents``.
"""

from __future__ import annotations

import asyncio

import pytest

from s3convex.consumer.ops.output import iso_ms
from s3convex.infra.desired import load_infra_settings
from s3convex.infra.provision import Provisioner
from tests.ops_support import run_cli
from tests.stack import Stack

pytestmark = pytest.mark.e2e

# UTF-16 (JavaScript's default string order) and UTF-8 disagree on these: U+FF61 sorts after
# U+1F600's surrogate pair in UTF-16, before it in UTF-8 — the order S3 and Convex both use.
ORDER_KEYS = ["order/\uff61.txt", "order/\U0001f600.txt", "order/é x.txt", "order/z.txt"]
# Listed as raw keys: a "%2F" or "+" in a key must not be decoded on the way.
RAW_KEYS = ["raw/pct%2Fliteral.txt", "raw/plus+a b.txt"]
KEEP = ["keep/1.txt", "keep/2.txt", *ORDER_KEYS, *RAW_KEYS]


def _notifications(stack: Stack, on: bool) -> None:
    if on:
        Provisioner.from_settings(load_infra_settings()).up()
    else:
        stack.s3.put_bucket_notification_configuration(Bucket=stack.bucket, NotificationConfiguration={})


async def _reconcile(stack: Stack, *args: str) -> tuple[int, dict]:
    result = await run_cli(stack, "reconcile", "--page-size", "2", *args)
    assert result.code in (0, 1), result.stderr
    return result.code, result.json


def _by_kind(report: dict) -> dict[str, set[str]]:
    kinds: dict[str, set[str]] = {"missing": set(), "gone": set(), "changed": set()}
    for item in report["items"]:
        kinds[item["kind"]].add(item["key"])
    return kinds


async def test_reconcile_finds_each_kind_of_drift_and_fix_resolves_it(stack: Stack) -> None:
    for key in [*KEEP, "gone/1.txt", "gone/2.txt", "changed/1.txt", "tomb/1.txt"]:
        stack.put(key, key.encode())
    await stack.wait_for_depth(len(KEEP) + 4)
    assert await stack.drain() == 0
    stack.s3.delete_object(Bucket=stack.bucket, Key="tomb/1.txt")
    await stack.wait_for_depth(1)
    assert await stack.drain() == 0
    assert (await stack.record("tomb/1.txt"))["status"] == "deleted"

    code, report = await _reconcile(stack)
    assert code == 0 and report["consistent"], report
    assert report["objects"] == len(KEEP) + 3 and report["records"] == len(KEEP) + 4
    assert report["resolvedItself"] == 0  # every record was matched by the listing itself

    # S3's LastModified has whole seconds: drift made in the same second as the last applied
    # event could not be ordered after it (reported as unresolved — see the next test).
    await asyncio.sleep(1.1)
    _notifications(stack, on=False)
    stack.put("missing/1.txt", b"one")
    stack.put("missing/2.txt", b"two!")
    stack.put("changed/1.txt", b"a different, longer body")
    stack.put("tomb/1.txt", b"back again")
    stack.s3.delete_objects(Bucket=stack.bucket, Delete={"Objects": [{"Key": "gone/1.txt"},
                                                                     {"Key": "gone/2.txt"}]})
    _notifications(stack, on=True)
    await asyncio.sleep(0.5)
    stack.take_all()  # the s3:TestEvent of turning notifications back on
    before = {key: await stack.record(key) for key in ("gone/1.txt", "changed/1.txt", "tomb/1.txt")}

    code, report = await _reconcile(stack, "--dry-run")
    assert code == 1 and not report["consistent"]
    assert _by_kind(report) == {"missing": {"missing/1.txt", "missing/2.txt", "tomb/1.txt"},
                                "gone": {"gone/1.txt", "gone/2.txt"},
                                "changed": {"changed/1.txt"}}
    assert (report["missing"], report["gone"], report["changed"], report["fixed"]) == (3, 2, 1, 0)
    assert {i["note"] for i in report["items"] if i["kind"] == "gone"} == {"would be marked missing"}
    changed = next(i for i in report["items"] if i["key"] == "changed/1.txt")
    assert changed["detail"].startswith(f"size {len(b'changed/1.txt')} → 24")
    for key, record in before.items():  # a dry run writes nothing
        assert await stack.record(key) == record

    code, scoped = await _reconcile(stack, "--prefix", "missing/")
    assert code == 1 and _by_kind(scoped)["missing"] == {"missing/1.txt", "missing/2.txt"}
    assert scoped["drift"] == 2 and scoped["objects"] == 2

    code, fixed = await _reconcile(stack, "--fix")
    assert code == 1  # drift was found (and fixed): a cron check still hears about it
    assert (fixed["drift"], fixed["fixed"], fixed["unresolved"]) == (6, 6, 0), fixed["items"]
    assert all(item["outcome"] == "fixed" for item in fixed["items"])
    assert {i["note"] for i in fixed["items"] if i["kind"] == "gone"} == {"marked missing"}

    code, after = await _reconcile(stack)
    assert code == 0 and after["consistent"], after["items"]
    assert after["markedMissing"] == 2  # S3 lost them: reported on every run, no drift
    for key in ("missing/1.txt", "missing/2.txt", "changed/1.txt", "tomb/1.txt"):
        record, head = await stack.record(key), stack.head(key)
        assert record["status"] == "available", key
        assert (record["size"], record["etag"]) == (head["ContentLength"], head["ETag"].strip('"'))
        assert record["url"], key  # the consumer's handler built it: URL included
        latest = (await stack.history(key))[0]
        assert latest["eventName"] == "ObjectCreated:Reconcile"
        assert latest["source"] == f"reconcile:{fixed['runId']}"
        assert latest["eventTime"] == int(head["LastModified"].timestamp() * 1000)
    # Deleted behind Convex's back: reconcile only saw that S3 no longer has them, so they are
    # marked missing with the time seen (R4.5), not tombstoned as if a delete had been applied.
    for key in ("gone/1.txt", "gone/2.txt"):
        record = await stack.record(key)
        assert record["status"] == "missing", record
        assert fixed["startedAt"] <= iso_ms(record["missingSince"]) <= after["startedAt"]
        assert not record.get("url")  # no URL is ever handed out for it
        assert [row["type"] for row in await stack.history(key)] == ["created"]
    assert stack.depth() == {"visible": 0, "invisible": 0, "delayed": 0}
    # Put back in S3 without an event reaching Convex: drift again, and --fix restores it.
    _notifications(stack, on=False)
    stack.put("gone/1.txt", b"restored")
    code, back = await _reconcile(stack, "--fix")
    assert [(i["key"], i["kind"], i["outcome"]) for i in back["items"]] == [
        ("gone/1.txt", "missing", "fixed")]
    assert (await stack.record("gone/1.txt"))["status"] == "available"
    assert back["markedMissing"] == 1


async def test_fix_never_overrides_a_newer_event(stack: Stack) -> None:
    _notifications(stack, on=False)
    stack.put("newer/1.txt", b"s3 holds this")
    last_modified = int(stack.head("newer/1.txt")["LastModified"].timestamp() * 1000)
    # Convex already holds a later event for the key (say a delete whose object S3 listed
    # a moment before it went): reconcile's created change must lose to it.
    later = last_modified + 60_000
    await stack.convex.mutation("assets:applyEvents", {"events": [
        {"type": "removed", "bucket": stack.bucket, "key": "newer/1.txt",
         "eventName": "ObjectRemoved:Delete", "eventTime": later}]})
    stack.put("same-second/1.txt", b"v1")
    await stack.convex.mutation("assets:applyEvents", {"events": [
        {"type": "created", "bucket": stack.bucket, "key": "same-second/1.txt",
         "eventName": "ObjectCreated:Put", "size": 1, "etag": "0" * 32,
         "eventTime": int(stack.head("same-second/1.txt")["LastModified"].timestamp() * 1000) + 999}]})

    code, report = await _reconcile(stack, "--fix")

    assert code == 1
    items = {item["key"]: item for item in report["items"]}
    assert items["newer/1.txt"]["kind"] == "missing"
    assert items["newer/1.txt"]["outcome"] == "unresolved"
    assert items["newer/1.txt"]["note"] == "stale: Convex holds a newer event for this key"
    assert items["same-second/1.txt"]["outcome"] == "unresolved"
    assert "same second" in items["same-second/1.txt"]["note"]
    record = await stack.record("newer/1.txt")
    assert record["status"] == "deleted" and record["eventTime"] == later
    assert len(await stack.history("newer/1.txt")) == 1


async def test_fix_classifies_keys_by_the_configured_layout(stack: Stack) -> None:
    layout = "tenants/*/s-{sessionId}/{sceneId}@{version}/{file}"
    session = f"{stack.resources.prefix}-layout"  # the local Convex server outlives this test
    key = f"tenants/acme/s-{session}/intro@3/video.mp4"
    _notifications(stack, on=False)
    stack.put(key, b"a video", ContentType="video/mp4")

    result = await run_cli(stack, "reconcile", "--fix", env={"ASSET_KEY_LAYOUT": layout})

    assert result.code == 1, result.stderr
    assert [(i["key"], i["outcome"]) for i in result.json["items"]] == [(key, "fixed")]
    record = await stack.record(key)
    # The daemon's layout, not the default one (which would leave the key without a session).
    assert [record.get(f) for f in ("sessionId", "sceneId", "version", "kind")] == [
        session, "intro", 3, "video"]
