"""``s3convex assets show|list`` against records the daemon wrote (and a few written directly)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from s3convex.consumer.ops import assets as assets_cli
from s3convex.consumer.ops.assets import AssetView
from s3convex.consumer.ops.output import plain
from tests.ops_support import run_cli
from tests.stack import Stack

pytestmark = pytest.mark.e2e


async def test_show_a_deleted_object_shows_its_tombstone_and_history(stack: Stack) -> None:
    key = "renders/scene one/video.mp4"
    stack.put(key, b"first", ContentType="video/mp4")
    await stack.wait_for_depth(1)
    assert await stack.drain() == 0
    stack.s3.delete_object(Bucket=stack.bucket, Key=key)
    await stack.wait_for_depth(1)
    assert await stack.drain() == 0

    shown = await run_cli(stack, "assets", "show", f"{stack.bucket}/{key}")

    assert shown.code == 0, shown.stderr
    record = shown.json["record"]
    assert record["status"] == "deleted" and record["deletedAt"] is not None
    assert record["size"] == 5 and record["contentType"] == "video/mp4"  # what went, kept
    # Convex's JSON gives whole numbers as floats (5.0); the CLI prints them as integers.
    assert isinstance(record["size"], int) and isinstance(record["revision"], int)
    assert isinstance(record["deletedAt"], int) and '"size": 5,' in shown.stdout
    assert all(isinstance(h["revision"], int) for h in shown.json["history"])
    assert record.get("url") is None and shown.json["url"] is None  # a tombstone has no link
    assert [(h["type"], h["eventName"]) for h in shown.json["history"]] == [
        ("removed", "ObjectRemoved:Delete"), ("created", "ObjectCreated:Put")]

    missing = await run_cli(stack, "assets", "show", f"s3://{stack.bucket}/no/such/key")
    assert missing.code == 1 and missing.json["record"] is None
    # The document first, then the error through the one exit path.
    assert missing.stderr.startswith("s3convex: error: no record for")
    assert "Traceback" not in missing.stderr
    bad = await run_cli(stack, "assets", "show", "just-a-bucket")
    # A usage error: consumer.cli.main exits 2 for usage and configuration errors, without a
    # traceback.
    assert bad.code == 2 and "BUCKET/KEY" in bad.stderr
    assert "Traceback" not in bad.stderr and bad.stdout == ""


async def test_list_by_prefix_status_and_session(stack: Stack) -> None:
    for key in ("list/a.txt", "list/b.txt", "list/c.txt", "other/d.txt"):
        stack.put(key, key.encode())
    await stack.wait_for_depth(4)
    assert await stack.drain() == 0
    stack.s3.delete_object(Bucket=stack.bucket, Key="list/b.txt")
    await stack.wait_for_depth(1)
    assert await stack.drain() == 0
    await stack.convex.mutation("assets:applyEvents", {"events": [
        {"type": "created", "bucket": stack.bucket, "key": f"sessions/s-42/{name}",
         "eventName": "ObjectCreated:Put", "eventTime": 1_800_000_000_000, "size": 1,
         "sessionId": "s-42"} for name in ("a.mp4", "b.json")]})

    by_prefix = (await run_cli(stack, "assets", "list", "--prefix", "list/")).json
    assert [r["key"] for r in by_prefix["items"]] == ["list/a.txt", "list/b.txt", "list/c.txt"]
    assert by_prefix["more"] is False
    limited = (await run_cli(stack, "assets", "list", "--prefix", "list/", "--limit", "2")).json
    assert len(limited["items"]) == 2 and limited["more"] is True

    deleted = (await run_cli(stack, "assets", "list", "--status", "deleted", "--prefix", "list/")).json
    assert [r["key"] for r in deleted["items"]] == ["list/b.txt"]

    session = (await run_cli(stack, "assets", "list", "--session", "s-42")).json
    assert sorted(r["key"] for r in session["items"]) == ["sessions/s-42/a.mp4", "sessions/s-42/b.json"]

    bad = await run_cli(stack, "assets", "list", "--status", "gone")
    # A usage error: exit 2 (not 1, which means "ran and failed"), no traceback, no output.
    assert bad.code == 2 and "--status must be one of" in bad.stderr
    assert "Traceback" not in bad.stderr and bad.stdout == ""


def test_show_renders_a_table(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(assets_cli, "console", lambda: Console(file=out, width=160))
    record = {"key": "a.mp4", "status": "available", "size": 2048.0, "etag": "e" * 32,
              "etagKind": "md5", "url": "https://cdn.example/a.mp4", "urlExpiresAt": 1.0,
              "lastEventName": "ObjectCreated:Put", "eventTime": 1.8e12, "revision": 1.0,
              "createdAt": 1.8e12, "updatedAt": 1.8e12}  # as Convex's JSON gives them
    history = [{"revision": 1.0, "type": "created", "eventName": "ObjectCreated:Put",
                "eventTime": 1.8e12, "size": 2048.0, "etag": "e" * 32, "source": "sqs:1"}]
    assets_cli._print_view(plain(AssetView("media", "a.mp4", record, history).to_dict()))
    text = out.getvalue()
    assert "media/a.mp4" in text and "available" in text and "2.0 KiB (2048 B)" in text
    assert "2048.0" not in text  # Convex's floats, printed whole
    assert "(expired)" in text and "ObjectCreated:Put" in text and "sqs:1" in text
