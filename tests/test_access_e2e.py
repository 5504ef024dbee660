"""AssetAccess and ``s3convex url`` against the real servers: S3 (moto or LocalStack) + local Convex.

Who may read is decided in Convex (owner of the session or a grant); every decision leaves an
audit row; a denied principal gets no URL; a granted one gets a URL that downloads the object
and lives no longer than its kind allows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from s3convex.access import AssetAccess
from s3convex.adapters.aws import open_clients
from s3convex.core.errors import AccessDenied, AssetGone, AssetNotFound
from tests.stack import ROOT, Stack

pytestmark = pytest.mark.e2e


@pytest.fixture
async def access(stack: Stack) -> AsyncIterator[AssetAccess]:
    settings = stack.settings(url_expires_video=3600, url_expires_source=120)
    async with open_clients(settings.aws) as aws:
        yield AssetAccess.from_settings(settings, stack.convex, aws.s3)


def session_of(stack: Stack) -> str:
    return f"{stack.resources.prefix}-session"


def key_of(stack: Stack, name: str) -> str:
    return f"sessions/{session_of(stack)}/scenes/intro/v1/{name}"


async def uploaded(stack: Stack, *names: str) -> list[str]:
    keys = [key_of(stack, name) for name in names]
    for key in keys:
        stack.put(key, key.encode())
    await stack.wait_for_depth(len(keys))
    assert await stack.drain() == 0
    return keys


async def audit_rows(stack: Stack, key: str) -> list[dict[str, Any]]:
    page = await stack.convex.query("access:auditLog", {
        "bucket": stack.bucket, "key": key, "paginationOpts": {"cursor": None, "numItems": 50}})
    return page["page"]


def url_expires_in(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0])


async def test_owner_gets_a_working_url_a_stranger_is_denied_and_both_are_audited(
        stack: Stack, access: AssetAccess) -> None:
    video, = await uploaded(stack, "my video ü.mp4")
    await stack.convex.mutation("access:setOwner", {
        "sessionId": session_of(stack), "ownerId": "alice", "actor": "test"})

    issued = await access.get_url("alice", stack.bucket, video)
    async with httpx.AsyncClient() as client:
        assert (await client.get(issued.url)).content == video.encode()
    # The stored URL (1 h) fits the video's lifetime: handed out as it is.
    assert issued.source == "stored"
    assert issued.url == (await stack.record(video))["url"]

    with pytest.raises(AccessDenied) as denied:
        await access.get_url("mallory", stack.bucket, video)
    assert "mallory" in str(denied.value) and "X-Amz" not in str(denied.value)

    rows = await audit_rows(stack, video)
    assert [(r["principal"], r["outcome"]) for r in rows] == [("mallory", "denied"), ("alice", "granted")]
    assert rows[0]["_id"] == denied.value.audit_id
    assert rows[1]["expiresAt"] == issued.expires_at_ms
    assert rows[1]["sessionId"] == session_of(stack)
    assert all(abs(r["at"] - time.time() * 1000) < 60_000 for r in rows)


async def test_sensitive_kinds_get_shorter_fresh_urls(stack: Stack, access: AssetAccess) -> None:
    source, video = await uploaded(stack, "scene.py", "video.mp4")
    await stack.convex.mutation("access:setOwner", {
        "sessionId": session_of(stack), "ownerId": "alice", "actor": "test"})

    issued = await access.get_url("alice", stack.bucket, source)
    assert issued.source == "fresh" and issued.kind == "source"
    assert url_expires_in(issued.url) == 120
    assert abs(issued.expires_at_ms - (time.time() + 120) * 1000) < 10_000
    async with httpx.AsyncClient() as client:
        assert (await client.get(issued.url)).content == source.encode()
    assert url_expires_in((await access.get_url("alice", stack.bucket, video)).url) == 3600


async def test_grants_and_revocation(stack: Stack, access: AssetAccess) -> None:
    video, = await uploaded(stack, "video.mp4")
    scope = {"sessionId": session_of(stack)}
    await stack.convex.mutation("access:grant", {"principal": "bob", "scope": scope, "actor": "alice"})
    assert (await access.get_url("bob", stack.bucket, video)).url
    await stack.convex.mutation("access:revoke", {"principal": "bob", "scope": scope, "actor": "alice"})
    with pytest.raises(AccessDenied):
        await access.get_url("bob", stack.bucket, video)


async def test_a_deleted_asset_is_gone_with_when(stack: Stack, access: AssetAccess) -> None:
    video, = await uploaded(stack, "video.mp4")
    await stack.convex.mutation("access:setOwner", {
        "sessionId": session_of(stack), "ownerId": "alice", "actor": "test"})
    stack.s3.delete_object(Bucket=stack.bucket, Key=video)
    await stack.wait_for_depth(1)
    assert await stack.drain() == 0
    with pytest.raises(AssetGone) as gone:
        await access.get_url("alice", stack.bucket, video)
    assert gone.value.deleted_at == (await stack.record(video))["deletedAt"]
    assert abs(gone.value.deleted_at - time.time() * 1000) < 120_000
    with pytest.raises(AssetNotFound):
        await access.get_url("alice", stack.bucket, key_of(stack, "never.mp4"))


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """``s3convex url ARGS`` as a real process; stdout is a pipe, not a terminal: JSON."""
    env = {**os.environ, **stack.env, "S3CONVEX_ACTOR": "ops@test"}
    return subprocess.run([sys.executable, "-m", "s3convex", "url", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


async def test_the_cli(stack: Stack) -> None:
    video, = await uploaded(stack, "clip one.mp4")

    denied = cli(stack, "get", video, "--as", "carol")
    assert denied.returncode == 1
    assert denied.stdout == ""
    assert denied.stderr.startswith("s3convex: error: access denied: 'carol' may not read")
    assert "Traceback" not in denied.stderr

    granted = cli(stack, "grant", "carol", "--key", video, "--expires-in", "1h")
    assert granted.returncode == 0, granted.stderr
    assert json.loads(granted.stdout)["principal"] == "carol"
    allowed = cli(stack, "get", video, "--as", "carol")
    assert allowed.returncode == 0, allowed.stderr
    issued = json.loads(allowed.stdout)  # no --json: a pipe is not a terminal
    assert issued["source"] in ("stored", "fresh") and isinstance(issued["expiresAt"], int)
    async with httpx.AsyncClient() as client:
        assert (await client.get(issued["url"])).content == video.encode()

    revoked = cli(stack, "revoke", "carol", "--key", video)
    assert json.loads(revoked.stdout) == {"principal": "carol", "revoked": 1}  # an int, not 1.0
    audit = json.loads(cli(stack, "audit", "--key", video).stdout)
    assert [(row["action"], row["outcome"]) for row in audit] == [
        ("revoke", "done"), ("read", "granted"), ("grant", "done"), ("read", "denied")]
    assert all(isinstance(row["at"], int) for row in audit)

    owned = cli(stack, "owner", session_of(stack), "dave")
    assert json.loads(owned.stdout) == {"sessionId": session_of(stack), "ownerId": "dave"}

    refreshed = cli(stack, "refresh")
    assert refreshed.returncode == 0, refreshed.stderr
    assert json.loads(refreshed.stdout)["scanned"] == 0  # stored URLs are an hour from expiry

    usage = cli(stack, "grant", "carol", "--session", "s", "--key", video)
    assert usage.returncode == 2 and "exactly one of --session or --key" in usage.stderr
